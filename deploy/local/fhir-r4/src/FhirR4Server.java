// A small FHIR R4 server for tests, made of HAPI FHIR's own plain-server parts: RestfulServer
// with in-memory providers (HAPI's HashMapResourceProvider) for Task, Slot, Appointment and
// Schedule, on Jetty. Incoming resources are parsed with HAPI's StrictErrorHandler, so an
// element R4 does not know (R5's Task.requestedPeriod, say) or a wrong value is refused with
// 400 and an OperationOutcome, as a validating hospital server would.
//
// Usage: java -cp classes:lib/* FhirR4Server <port> [--find]
// GET /Task?_lastUpdated=ge<instant>[&identifier=<system>|[value]] answers the resources changed
// since then (the notifier polls Tasks so).
// GET /Slot?status=free[&start=ge..&start=lt..][&schedule.actor=<type>/<id>[,..]]
// [&service-type=<system>|<code>][&_include=Slot:schedule] answers the free slots of the
// schedules of those actors, as a hospital's scheduling server does (rebooking).
//
// R4 Subscriptions with a rest-hook channel: HAPI's plain server has no subscription support
// (that lives in HAPI's JPA server), so this server carries the small part the notifier
// uses, as the R4 spec (subscription.html) describes it: a Subscription created "requested"
// becomes "active"; after each Task create or update that matches an active rest-hook
// Subscription's criteria ("Task", optionally ?identifier=<system>|), the server POSTs to the
// channel's endpoint with the channel's headers and, with no channel.payload, an empty body
// (R4's "empty notification": the client reads what changed itself).

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.parser.StrictErrorHandler;
import ca.uhn.fhir.model.api.Include;
import ca.uhn.fhir.model.valueset.BundleTypeEnum;
import ca.uhn.fhir.rest.annotation.IncludeParam;
import ca.uhn.fhir.rest.annotation.Operation;
import ca.uhn.fhir.rest.annotation.OperationParam;
import ca.uhn.fhir.rest.annotation.OptionalParam;
import ca.uhn.fhir.rest.annotation.RequiredParam;
import ca.uhn.fhir.rest.annotation.Search;
import ca.uhn.fhir.rest.api.MethodOutcome;
import ca.uhn.fhir.rest.api.server.IBundleProvider;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.param.DateRangeParam;
import ca.uhn.fhir.rest.param.ReferenceOrListParam;
import ca.uhn.fhir.rest.param.ReferenceParam;
import ca.uhn.fhir.rest.param.TokenParam;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.SimpleBundleProvider;
import ca.uhn.fhir.rest.server.provider.HashMapResourceProvider;
import java.net.URI;
import java.net.URLDecoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Date;
import java.util.List;
import java.util.Set;
import java.util.function.Consumer;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Appointment;
import org.hl7.fhir.r4.model.Base;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.DateTimeType;
import org.hl7.fhir.r4.model.DomainResource;
import org.hl7.fhir.r4.model.Identifier;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.Schedule;
import org.hl7.fhir.r4.model.Slot;
import org.hl7.fhir.r4.model.StringType;
import org.hl7.fhir.r4.model.Subscription;
import org.hl7.fhir.r4.model.Task;

public final class FhirR4Server {

  /** HashMapResourceProvider plus the one search a poller needs: by _lastUpdated. */
  public static class Provider<T extends IBaseResource> extends HashMapResourceProvider<T> {
    private final Consumer<T> prepare; // before it is stored
    private final Consumer<T> onChange; // once it is stored

    public Provider(FhirContext ctx, Class<T> type) {
      this(ctx, type, null, null);
    }

    public Provider(FhirContext ctx, Class<T> type, Consumer<T> prepare, Consumer<T> onChange) {
      super(ctx, type);
      this.prepare = prepare;
      this.onChange = onChange;
    }

    // HashMapResourceProvider keeps versionId only; a poller needs meta.lastUpdated too.
    // (Overrides without annotations: HAPI binds the parent's annotated methods.)
    @Override
    public synchronized MethodOutcome create(T resource, RequestDetails request) {
      resource.getMeta().setLastUpdated(new Date());
      if (prepare != null) {
        prepare.accept(resource);
      }
      MethodOutcome outcome = super.create(resource, request);
      changed(resource);
      return outcome;
    }

    @Override
    public synchronized MethodOutcome update(T resource, String conditional, RequestDetails request) {
      resource.getMeta().setLastUpdated(new Date());
      if (prepare != null) {
        prepare.accept(resource);
      }
      MethodOutcome outcome = super.update(resource, conditional, request);
      changed(resource);
      return outcome;
    }

    private void changed(T resource) {
      if (onChange != null) {
        onChange.accept(resource);
      }
    }

    public synchronized List<T> stored() {
      return getAllResources();
    }

    @Search
    public synchronized List<T> changedSince(
        @RequiredParam(name = "_lastUpdated") DateRangeParam range,
        @OptionalParam(name = "identifier") TokenParam identifier) {
      List<T> found = new ArrayList<>();
      for (T resource : getAllResources()) {
        Date updated = resource.getMeta().getLastUpdated();
        Date lower = range.getLowerBoundAsInstant();
        Date upper = range.getUpperBoundAsInstant();
        if (updated != null
            && (lower == null || !updated.before(lower))
            && (upper == null || !updated.after(upper))
            && (identifier == null || hasIdentifier(resource, identifier))) {
          found.add(resource);
        }
      }
      return found;
    }

    // identifier=<system>| (any value of that system) or <system>|<value>.
    private static boolean hasIdentifier(IBaseResource resource, TokenParam token) {
      if (!(resource instanceof DomainResource)) {
        return false;
      }
      for (Base base : ((DomainResource) resource).getNamedProperty("identifier").getValues()) {
        Identifier id = (Identifier) base;
        boolean system = token.getSystem() == null || token.getSystem().equals(id.getSystem());
        boolean value = token.getValue() == null || token.getValue().isEmpty()
            || token.getValue().equals(id.getValue());
        if (system && value) {
          return true;
        }
      }
      return false;
    }
  }

  /** Slots, searchable as a scheduling server answers a free-slot query. */
  public static final class SlotProvider extends Provider<Slot> {
    private final Provider<Schedule> schedules;

    public SlotProvider(FhirContext ctx, Provider<Schedule> schedules) {
      super(ctx, Slot.class);
      this.schedules = schedules;
    }

    @Search
    public synchronized List<Slot> slots(
        @RequiredParam(name = Slot.SP_STATUS) TokenParam status,
        @OptionalParam(name = Slot.SP_START) DateRangeParam start,
        @OptionalParam(name = Slot.SP_SCHEDULE, chainWhitelist = {"actor"})
            ReferenceOrListParam schedule,
        @OptionalParam(name = Slot.SP_SERVICE_TYPE) TokenParam serviceType,
        @IncludeParam(allow = {"Slot:schedule"}) Set<Include> includes) {
      List<Slot> found = new ArrayList<>();
      for (Slot stored : getAllResources()) {
        Schedule owner = scheduleOf(stored);
        if (!status.getValue().equals(stored.getStatus().toCode())
            || !inRange(stored.getStart(), start)
            || (schedule != null && !hasActor(owner, schedule))
            || (serviceType != null && !hasCode(stored.getServiceType(), serviceType))) {
          continue;
        }
        Slot slot = stored.copy();
        if (includes != null && !includes.isEmpty() && owner != null) {
          slot.getSchedule().setResource(owner); // HAPI adds it to the Bundle as an include
        }
        found.add(slot);
      }
      found.sort((a, b) -> a.getStart().compareTo(b.getStart()));
      return found;
    }

    private Schedule scheduleOf(Slot slot) {
      String id = slot.getSchedule().getReferenceElement().getIdPart();
      for (Schedule candidate : schedules.stored()) {
        if (candidate.getIdElement().getIdPart().equals(id)) {
          return candidate;
        }
      }
      return null;
    }

    private static boolean inRange(Date when, DateRangeParam range) {
      if (range == null) {
        return true;
      }
      Date lower = range.getLowerBoundAsInstant();
      Date upper = range.getUpperBoundAsInstant();
      return when != null && (lower == null || !when.before(lower))
          && (upper == null || !when.after(upper));
    }

    private static boolean hasActor(Schedule owner, ReferenceOrListParam wanted) {
      if (owner == null) {
        return false;
      }
      for (ReferenceParam param : wanted.getValuesAsQueryTokens()) {
        for (Reference actor : owner.getActor()) {
          String ref = actor.getReferenceElement().toUnqualifiedVersionless().getValue();
          if (ref != null && ref.equals(param.getValue())) {
            return true;
          }
        }
      }
      return false;
    }

    private static boolean hasCode(List<CodeableConcept> concepts, TokenParam token) {
      for (CodeableConcept concept : concepts) {
        for (Coding coding : concept.getCoding()) {
          boolean system = token.getSystem() == null || token.getSystem().equals(coding.getSystem());
          if (system && token.getValue().equals(coding.getCode())) {
            return true;
          }
        }
      }
      return false;
    }
  }

  /**
   * Appointments with the availability operation of the Argonaut / HL7 Scheduling IG, for a
   * hospital whose server has it (started with --find): GET Appointment/$find?start=..&end=..
   * [&practitioner=Practitioner/<id> | &location=Location/<id> | &service-category=<dept>]
   * [&service-type=<code>] answers a searchset Bundle of proposed Appointments, one per free
   * slot of a matching schedule, each naming its Slot. HAPI lists the operation in the
   * CapabilityStatement, which is how a client learns the server has it.
   */
  public static final class FindingAppointments extends Provider<Appointment> {
    private final SlotProvider slots;
    private final Provider<Schedule> schedules;

    public FindingAppointments(FhirContext ctx, SlotProvider slots, Provider<Schedule> schedules) {
      super(ctx, Appointment.class);
      this.slots = slots;
      this.schedules = schedules;
    }

    @Operation(name = "$find", idempotent = true, bundleType = BundleTypeEnum.SEARCHSET)
    public synchronized IBundleProvider find(
        @OperationParam(name = "start", min = 1) DateTimeType start,
        @OperationParam(name = "end", min = 1) DateTimeType end,
        @OperationParam(name = "practitioner") StringType practitioner,
        @OperationParam(name = "location") StringType location,
        @OperationParam(name = "service-category") StringType category,
        @OperationParam(name = "service-type") StringType serviceType) {
      String actor = practitioner != null ? practitioner.getValue()
          : location != null ? location.getValue()
          : category != null ? "HealthcareService/" + category.getValue() : null;
      List<IBaseResource> found = new ArrayList<>();
      for (Slot slot : slots.stored()) {
        Date when = slot.getStart();
        if (slot.getStatus() != Slot.SlotStatus.FREE || when == null
            || when.before(start.getValue()) || !when.before(end.getValue())
            || (actor != null && !scheduleHas(slot, actor))
            || (serviceType != null && !hasServiceType(slot, serviceType.getValue()))) {
          continue;
        }
        Appointment offer = new Appointment();
        offer.setId("find-" + slot.getIdElement().getIdPart());
        offer.setStatus(Appointment.AppointmentStatus.PROPOSED);
        offer.setStart(slot.getStart());
        offer.setEnd(slot.getEnd());
        offer.addSlot(new Reference("Slot/" + slot.getIdElement().getIdPart()));
        found.add(offer);
      }
      found.sort((a, b) -> ((Appointment) a).getStart().compareTo(((Appointment) b).getStart()));
      return new SimpleBundleProvider(found);
    }

    private boolean scheduleHas(Slot slot, String actor) {
      String id = slot.getSchedule().getReferenceElement().getIdPart();
      for (Schedule schedule : schedules.stored()) {
        if (schedule.getIdElement().getIdPart().equals(id)) {
          for (Reference ref : schedule.getActor()) {
            if (actor.equals(ref.getReferenceElement().toUnqualifiedVersionless().getValue())) {
              return true;
            }
          }
        }
      }
      return false;
    }

    private static boolean hasServiceType(Slot slot, String code) {
      for (CodeableConcept concept : slot.getServiceType()) {
        for (Coding coding : concept.getCoding()) {
          if (code.equals(coding.getCode())) {
            return true;
          }
        }
      }
      return false;
    }
  }

  /** The active rest-hook Subscriptions, told of every Task change they match. */
  public static final class Subscriptions {
    private final HttpClient http =
        HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private Provider<Subscription> store;

    // A new or updated Subscription that is "requested" is accepted at once: "active".
    void accept(Subscription subscription) {
      if (subscription.getStatus() == Subscription.SubscriptionStatus.REQUESTED) {
        subscription.setStatus(Subscription.SubscriptionStatus.ACTIVE);
      }
    }

    void taskChanged(Task task) {
      for (Subscription s : store.stored()) {
        Subscription.SubscriptionChannelComponent channel = s.getChannel();
        if (s.getStatus() == Subscription.SubscriptionStatus.ACTIVE
            && channel.getType() == Subscription.SubscriptionChannelType.RESTHOOK
            && matches(s.getCriteria(), task)) {
          notify(channel);
        }
      }
    }

    private static boolean matches(String criteria, Task task) {
      if (criteria == null || !(criteria.equals("Task") || criteria.startsWith("Task?"))) {
        return false;
      }
      int query = criteria.indexOf('?');
      if (query < 0) {
        return true;
      }
      for (String pair : criteria.substring(query + 1).split("&")) {
        String[] kv = pair.split("=", 2);
        if (kv.length == 2 && kv[0].equals("identifier")) {
          String token = URLDecoder.decode(kv[1], StandardCharsets.UTF_8);
          String system = token.contains("|") ? token.substring(0, token.indexOf('|')) : null;
          String value = token.contains("|") ? token.substring(token.indexOf('|') + 1) : token;
          boolean found = false;
          for (Identifier id : task.getIdentifier()) {
            found |= (system == null || system.equals(id.getSystem()))
                && (value.isEmpty() || value.equals(id.getValue()));
          }
          if (!found) {
            return false;
          }
        }
      }
      return true;
    }

    private void notify(Subscription.SubscriptionChannelComponent channel) {
      HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(channel.getEndpoint()))
          .timeout(Duration.ofSeconds(10));
      for (StringType header : channel.getHeader()) {
        String[] nv = header.getValue().split(":", 2);
        if (nv.length == 2) {
          request.header(nv[0].trim(), nv[1].trim());
        }
      }
      if (channel.hasPayload()) {
        request.header("Content-Type", channel.getPayload());
      }
      // The notifier's subscription asks for no payload: an empty POST.
      http.sendAsync(request.POST(HttpRequest.BodyPublishers.noBody()).build(),
          HttpResponse.BodyHandlers.discarding());
    }
  }

  public static void main(String[] args) throws Exception {
    int port = Integer.parseInt(args[0]);
    FhirContext ctx = FhirContext.forR4();
    ctx.setParserErrorHandler(new StrictErrorHandler());
    RestfulServer fhir = new RestfulServer(ctx);
    Subscriptions subscriptions = new Subscriptions();
    subscriptions.store = new Provider<>(ctx, Subscription.class, subscriptions::accept, null);
    Provider<Schedule> schedules = new Provider<>(ctx, Schedule.class);
    SlotProvider slots = new SlotProvider(ctx, schedules);
    boolean find = args.length > 1 && args[1].equals("--find");
    fhir.setResourceProviders(
        new Provider<>(ctx, Task.class, null, subscriptions::taskChanged),
        subscriptions.store,
        slots,
        find ? new FindingAppointments(ctx, slots, schedules) : new Provider<>(ctx, Appointment.class),
        schedules);
    ServletContextHandler context = new ServletContextHandler();
    context.setContextPath("/");
    context.addServlet(new ServletHolder(fhir), "/fhir/*");
    Server server = new Server(port);
    server.setHandler(context);
    server.start();
    System.out.println("fhir-r4-server listening on " + port);
    server.join();
  }
}
