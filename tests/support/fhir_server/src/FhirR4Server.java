// A small FHIR R4 server for tests, made of HAPI FHIR's own plain-server parts: RestfulServer
// with in-memory providers (HAPI's HashMapResourceProvider) for Task, Slot, Appointment and
// Schedule, on Jetty. Incoming resources are parsed with HAPI's StrictErrorHandler, so an
// element R4 does not know (R5's Task.requestedPeriod, say) or a wrong value is refused with
// 400 and an OperationOutcome, as a validating hospital server would.
//
// Usage: java -cp classes:lib/* FhirR4Server <port>
// GET /Task?_lastUpdated=ge<instant>[&identifier=<system>|[value]] answers the resources changed
// since then (the notifier polls Tasks so).
// GET /Slot?status=free[&start=ge..&start=lt..][&schedule.actor=<type>/<id>[,..]]
// [&service-type=<system>|<code>][&_include=Slot:schedule] answers the free slots of the
// schedules of those actors, as a hospital's scheduling server does (rebooking).

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.parser.StrictErrorHandler;
import ca.uhn.fhir.model.api.Include;
import ca.uhn.fhir.rest.annotation.IncludeParam;
import ca.uhn.fhir.rest.annotation.OptionalParam;
import ca.uhn.fhir.rest.annotation.RequiredParam;
import ca.uhn.fhir.rest.annotation.Search;
import ca.uhn.fhir.rest.api.MethodOutcome;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.param.DateRangeParam;
import ca.uhn.fhir.rest.param.ReferenceOrListParam;
import ca.uhn.fhir.rest.param.ReferenceParam;
import ca.uhn.fhir.rest.param.TokenParam;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.HashMapResourceProvider;
import java.util.ArrayList;
import java.util.Date;
import java.util.List;
import java.util.Set;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Appointment;
import org.hl7.fhir.r4.model.Base;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.DomainResource;
import org.hl7.fhir.r4.model.Identifier;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.Schedule;
import org.hl7.fhir.r4.model.Slot;
import org.hl7.fhir.r4.model.Task;

public final class FhirR4Server {

  /** HashMapResourceProvider plus the one search a poller needs: by _lastUpdated. */
  public static class Provider<T extends IBaseResource> extends HashMapResourceProvider<T> {
    public Provider(FhirContext ctx, Class<T> type) {
      super(ctx, type);
    }

    // HashMapResourceProvider keeps versionId only; a poller needs meta.lastUpdated too.
    // (Overrides without annotations: HAPI binds the parent's annotated methods.)
    @Override
    public synchronized MethodOutcome create(T resource, RequestDetails request) {
      resource.getMeta().setLastUpdated(new Date());
      return super.create(resource, request);
    }

    @Override
    public synchronized MethodOutcome update(T resource, String conditional, RequestDetails request) {
      resource.getMeta().setLastUpdated(new Date());
      return super.update(resource, conditional, request);
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

  public static void main(String[] args) throws Exception {
    int port = Integer.parseInt(args[0]);
    FhirContext ctx = FhirContext.forR4();
    ctx.setParserErrorHandler(new StrictErrorHandler());
    RestfulServer fhir = new RestfulServer(ctx);
    Provider<Schedule> schedules = new Provider<>(ctx, Schedule.class);
    fhir.setResourceProviders(
        new Provider<>(ctx, Task.class),
        new SlotProvider(ctx, schedules),
        new Provider<>(ctx, Appointment.class),
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
