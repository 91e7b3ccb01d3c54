# ruff: noqa: RUF001, RUF002  (Cyrillic words are meant: they are the ru/bg texts)
"""Words and dates in a reader's language (Babel, CLDR), never ISO.

For the administrator: labels for codes, dates and times in the clinic's zone with the zone
named, and the choice of a page's language. A missing word falls back to English so a new
code never breaks a task, and a unit test keeps every language complete.

For the patient: "2026 m. kovo 4 d. 15:00" or "March 4, 2026, 3:00 PM" (and so in ru, bg) in
their zone. CLDR's narrow and non-breaking spaces become plain spaces there: they are not in
the GSM-7 alphabet and would turn an English SMS into UCS-2 (more segments for the same words).

Pure: no I/O. Languages are the templates' (en, lt, ru, bg).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton, format_time, get_datetime_format

LANGUAGES = ("en", "lt", "ru", "bg")
FALLBACK = "en"

# Outcome codes as words (call results first: they are what a front desk picks).
RESULTS: dict[str, dict[str, str]] = {
    "en": {
        "answered_rebooked": "rebooked",
        "answered_declined": "declined",
        "clinical_concern": "clinical concern",
        "callback_requested": "asked to be called back",
        "no_answer": "no answer",
        "busy": "line busy",
        "voicemail": "voicemail",
        "wrong_number": "wrong number",
        "sent": "sent",
        "delivered": "delivered",
        "read": "read",
        "feedback": "feedback given",
        "failed": "not delivered",
        "bounced": "email bounced",
        "task_created": "call task given to the front desk",
        "opt_out": "opted out",
        "reply": "patient replied",
        "link_opened": "opened the rebooking link",
        "booking_requested": "picked a new time by link (awaiting the hospital)",
        "channel_impossible": "could not be sent",
    },
    "lt": {
        "answered_rebooked": "užregistruotas iš naujo",
        "answered_declined": "atsisakė",
        "clinical_concern": "klinikinė problema",
        "callback_requested": "prašė perskambinti",
        "no_answer": "neatsiliepė",
        "busy": "linija užimta",
        "voicemail": "balso paštas",
        "wrong_number": "neteisingas numeris",
        "sent": "išsiųsta",
        "delivered": "pristatyta",
        "read": "perskaityta",
        "feedback": "įvertino",
        "failed": "nepristatyta",
        "bounced": "el. laiškas grįžo",
        "task_created": "skambučio užduotis registratūrai",
        "opt_out": "atsisakė pranešimų",
        "reply": "pacientas atsakė",
        "link_opened": "atidarė registracijos nuorodą",
        "booking_requested": "pasirinko naują laiką per nuorodą (laukiama ligoninės)",
        "channel_impossible": "nepavyko išsiųsti",
    },
    "ru": {
        "answered_rebooked": "записан заново",
        "answered_declined": "отказался",
        "clinical_concern": "проблема со здоровьем",
        "callback_requested": "просил перезвонить",
        "no_answer": "не ответил",
        "busy": "линия занята",
        "voicemail": "автоответчик",
        "wrong_number": "неверный номер",
        "sent": "отправлено",
        "delivered": "доставлено",
        "read": "прочитано",
        "feedback": "оценил(а)",
        "failed": "не доставлено",
        "bounced": "письмо вернулось",
        "task_created": "задача на звонок регистратуре",
        "opt_out": "отписался",
        "reply": "пациент ответил",
        "link_opened": "открыл ссылку для записи",
        "booking_requested": "выбрал новое время по ссылке (ждём больницу)",
        "channel_impossible": "не удалось отправить",
    },
    "bg": {
        "answered_rebooked": "записан отново",
        "answered_declined": "отказа",
        "clinical_concern": "здравословен проблем",
        "callback_requested": "помоли да му се обадим",
        "no_answer": "не отговори",
        "busy": "линията е заета",
        "voicemail": "гласова поща",
        "wrong_number": "грешен номер",
        "sent": "изпратено",
        "delivered": "доставено",
        "read": "прочетено",
        "feedback": "оцени",
        "failed": "недоставено",
        "bounced": "имейлът се върна",
        "task_created": "задача за обаждане към регистратурата",
        "opt_out": "отказа съобщения",
        "reply": "пациентът отговори",
        "link_opened": "отвори връзката за записване",
        "booking_requested": "избра нов час по връзката (чака се болницата)",
        "channel_impossible": "не можа да се изпрати",
    },
}

REASONS: dict[str, dict[str, str]] = {
    "en": {
        "no_show": "missed visit",
        "late_cancellation": "visit cancelled late",
        "clinic_cancellation": "visit cancelled by the clinic",
        "next_visit_due": "next visit due, none booked",
        "unanswered_call": "call not answered",
        "stage_window_at_risk": "next treatment stage not booked",
    },
    "lt": {
        "no_show": "neatvyko į vizitą",
        "late_cancellation": "vizitas atšauktas vėlai",
        "clinic_cancellation": "vizitą atšaukė klinika",
        "next_visit_due": "laikas kitam vizitui, neužsiregistruota",
        "unanswered_call": "neatsiliepė į skambutį",
        "stage_window_at_risk": "kitas gydymo etapas neužregistruotas",
    },
    "ru": {
        "no_show": "пропущенный визит",
        "late_cancellation": "визит отменён поздно",
        "clinic_cancellation": "визит отменён клиникой",
        "next_visit_due": "пора на следующий визит, записи нет",
        "unanswered_call": "звонок без ответа",
        "stage_window_at_risk": "следующий этап лечения не записан",
    },
    "bg": {
        "no_show": "пропуснато посещение",
        "late_cancellation": "посещението е отменено късно",
        "clinic_cancellation": "посещението е отменено от клиниката",
        "next_visit_due": "време е за следващо посещение, няма записан час",
        "unanswered_call": "неотговорено обаждане",
        "stage_window_at_risk": "следващият етап от лечението не е записан",
    },
}

MESSENGER_NAMES = {"whatsapp": "WhatsApp", "telegram": "Telegram", "viber": "Viber"}
CHANNELS: dict[str, dict[str, str]] = {
    # The messengers are proper names: the same in every language.
    "en": {"sms": "SMS", "email": "email", "call_task": "call"} | MESSENGER_NAMES,
    "lt": {"sms": "SMS", "email": "el. paštas", "call_task": "skambutis"} | MESSENGER_NAMES,
    "ru": {"sms": "SMS", "email": "эл. почта", "call_task": "звонок"} | MESSENGER_NAMES,
    "bg": {"sms": "SMS", "email": "имейл", "call_task": "обаждане"} | MESSENGER_NAMES,
}

# The report page (report_links.py) and the task's own words.
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "page_title": "Call result",
        "call": "Call",
        "phone": "Phone",
        "phone_unknown": "unknown",
        "shared": "shared number",
        "why": "Why",
        "window": "Best window",
        "stage": "Stage",
        "deadline": "deadline",
        "no_deadline": "none",
        "notes": "Doctor's notes",
        "concern": "Clinical concern reported on the call",
        "owner": "Owner",
        "risk": (
            "Risk {score}: earlier no-shows {no_shows}, unanswered attempts {unanswered}, "
            "days to deadline {days}, plan stage {plan}"
        ),
        "attempt": "Earlier attempt {n}: {channel}, {at}: {result}",
        "script": "Script",
        "task_subject": "Call task: {reason} ({patient})",
        "escalation_subject": "Escalation, decision needed: {reason} ({patient})",
        "withdrawn": "Withdrawn: {subject}",
        "escalation": "ESCALATION: the follow-up needs a decision.",
        "safeguarding": "SAFEGUARDING: a child was not brought to repeated visits; the "
        "safeguarding lead decides what follows.",
        "at_risk": "Deadline at risk: {stage}, by {date}.",
        "at_risk_none": "No stage deadline is known; the follow-up could not reach the patient.",
        "tried": "Tried so far:",
        "tried_line": "{n}. {channel}, {at}: {result}",
        "tried_none": "Nothing was tried yet.",
        "decision": "Decision asked: call the patient yourself, change the treatment plan's "
        'deadline, or close the follow-up (record "declined").',
        "patient": "Patient",
        "record": "Record: {result}",
        "callback_at": "Call back at ({zone})",
        "recorded": "Recorded: {result}. Thank you.",
        "already": "Already recorded: {result}. Nothing was changed.",
        "expired": "This link has expired. Report the result in the clinic's system.",
        "invalid": "This link is not valid. Use the link from the call task as it was sent.",
        "cross_site": "This form can only be sent from its own page.",
        "bad_callback": "Please give the date and time to call back.",
        "report_links": "Report the result (one click)",
        "no_result": "no result yet",
        "shared_number": "Number shared by {count} patients: confirm you are speaking with "
        "the patient before giving any details.",
    },
    "lt": {
        "page_title": "Skambučio rezultatas",
        "call": "Skambinti",
        "phone": "Telefonas",
        "phone_unknown": "nežinomas",
        "shared": "bendras numeris",
        "why": "Priežastis",
        "window": "Tinkamas laikas",
        "stage": "Etapas",
        "deadline": "terminas",
        "no_deadline": "nėra",
        "notes": "Gydytojo pastabos",
        "concern": "Skambučio metu pranešta klinikinė problema",
        "owner": "Atsakingas",
        "risk": (
            "Rizika {score}: ankstesni neatvykimai {no_shows}, neatsakyti bandymai {unanswered}, "
            "dienų iki termino {days}, gydymo plano etapas {plan}"
        ),
        "attempt": "Ankstesnis bandymas {n}: {channel}, {at}: {result}",
        "script": "Pokalbio planas",
        "task_subject": "Skambučio užduotis: {reason} ({patient})",
        "escalation_subject": "Eskalavimas, reikia sprendimo: {reason} ({patient})",
        "withdrawn": "Atšaukta: {subject}",
        "escalation": "ESKALAVIMAS: reikia jūsų sprendimo.",
        "safeguarding": "VAIKO APSAUGA: vaikas pakartotinai nebuvo atvestas į vizitus; "
        "sprendžia už vaiko apsaugą atsakingas asmuo.",
        "at_risk": "Gresia praleisti terminą: {stage}, iki {date}.",
        "at_risk_none": "Etapo terminas nežinomas; pacientui nepavyko prisiskambinti.",
        "tried": "Kas jau bandyta:",
        "tried_line": "{n}. {channel}, {at}: {result}",
        "tried_none": "Dar nieko nebandyta.",
        "decision": "Prašomas sprendimas: paskambinti pacientui patiems, pakeisti gydymo "
        "plano terminą arba užbaigti stebėseną (įrašyti „atsisakė“).",
        "patient": "Pacientas",
        "record": "Įrašyti: {result}",
        "callback_at": "Perskambinti ({zone})",
        "recorded": "Įrašyta: {result}. Ačiū.",
        "already": "Jau įrašyta: {result}. Niekas nepakeista.",
        "expired": "Nuoroda nebegalioja. Rezultatą įrašykite klinikos sistemoje.",
        "invalid": "Nuoroda negalioja. Naudokite nuorodą iš skambučio užduoties tokią, kokia "
        "buvo išsiųsta.",
        "cross_site": "Šią formą galima siųsti tik iš jos pačios puslapio.",
        "bad_callback": "Nurodykite datą ir laiką, kada perskambinti.",
        "report_links": "Įrašyti rezultatą (vienu paspaudimu)",
        "no_result": "rezultato dar nėra",
        "shared_number": "Numeriu naudojasi {count} pacientai: prieš sakydami bet kokią "
        "informaciją, įsitikinkite, kad kalbate su pacientu.",
    },
    "ru": {
        "page_title": "Результат звонка",
        "call": "Позвонить",
        "phone": "Телефон",
        "phone_unknown": "неизвестен",
        "shared": "общий номер",
        "why": "Причина",
        "window": "Удобное время",
        "stage": "Этап",
        "deadline": "срок",
        "no_deadline": "нет",
        "notes": "Заметки врача",
        "concern": "Во время звонка сообщено о проблеме со здоровьем",
        "owner": "Ответственный",
        "risk": (
            "Риск {score}: прежние неявки {no_shows}, попытки без ответа {unanswered}, "
            "дней до срока {days}, этап плана {plan}"
        ),
        "attempt": "Прежняя попытка {n}: {channel}, {at}: {result}",
        "script": "План разговора",
        "task_subject": "Задача на звонок: {reason} ({patient})",
        "escalation_subject": "Эскалация, нужно решение: {reason} ({patient})",
        "withdrawn": "Отменено: {subject}",
        "escalation": "ЭСКАЛАЦИЯ: нужно ваше решение.",
        "safeguarding": "ЗАЩИТА РЕБЁНКА: ребёнка неоднократно не привели на приём; решение "
        "принимает ответственный за защиту детей.",
        "at_risk": "Под угрозой срок: {stage}, до {date}.",
        "at_risk_none": "Срок этапа неизвестен; до пациента не удалось дозвониться.",
        "tried": "Что уже пробовали:",
        "tried_line": "{n}. {channel}, {at}: {result}",
        "tried_none": "Пока ничего не пробовали.",
        "decision": "Нужно решение: позвонить пациенту самим, изменить срок в плане лечения "
        "или закрыть наблюдение (записать «отказался»).",
        "patient": "Пациент",
        "record": "Записать: {result}",
        "callback_at": "Перезвонить ({zone})",
        "recorded": "Записано: {result}. Спасибо.",
        "already": "Уже записано: {result}. Ничего не изменено.",
        "expired": "Срок действия ссылки истёк. Запишите результат в системе клиники.",
        "invalid": "Ссылка недействительна. Используйте ссылку из задачи в том виде, в каком "
        "она пришла.",
        "cross_site": "Эту форму можно отправить только с её собственной страницы.",
        "bad_callback": "Укажите дату и время, когда перезвонить.",
        "report_links": "Записать результат (одним нажатием)",
        "no_result": "результата пока нет",
        "shared_number": "Номером пользуются {count} пациента: прежде чем сообщать "
        "подробности, убедитесь, что говорите с пациентом.",
    },
    "bg": {
        "page_title": "Резултат от обаждането",
        "call": "Обадете се на",
        "phone": "Телефон",
        "phone_unknown": "неизвестен",
        "shared": "общ номер",
        "why": "Причина",
        "window": "Удобно време",
        "stage": "Етап",
        "deadline": "срок",
        "no_deadline": "няма",
        "notes": "Бележки на лекаря",
        "concern": "По време на разговора е съобщен здравословен проблем",
        "owner": "Отговорник",
        "risk": (
            "Риск {score}: предишни неявявания {no_shows}, опити без отговор {unanswered}, "
            "дни до срока {days}, етап от плана {plan}"
        ),
        "attempt": "Предишен опит {n}: {channel}, {at}: {result}",
        "script": "План на разговора",
        "task_subject": "Задача за обаждане: {reason} ({patient})",
        "escalation_subject": "Ескалация, нужно е решение: {reason} ({patient})",
        "withdrawn": "Оттеглено: {subject}",
        "escalation": "ЕСКАЛАЦИЯ: нужно е вашето решение.",
        "safeguarding": "ЗАКРИЛА НА ДЕТЕТО: детето многократно не е доведено на посещение; "
        "решението е на отговорника за закрила на детето.",
        "at_risk": "Застрашен срок: {stage}, до {date}.",
        "at_risk_none": "Срокът на етапа не е известен; пациентът не беше открит.",
        "tried": "Какво е опитано:",
        "tried_line": "{n}. {channel}, {at}: {result}",
        "tried_none": "Още нищо не е опитано.",
        "decision": "Нужно решение: да се обадите сами на пациента, да промените срока в "
        "плана на лечение или да закриете проследяването (запишете „отказа“).",
        "patient": "Пациент",
        "record": "Запиши: {result}",
        "callback_at": "Обаждане в ({zone})",
        "recorded": "Записано: {result}. Благодарим.",
        "already": "Вече е записано: {result}. Нищо не е променено.",
        "expired": "Връзката е изтекла. Запишете резултата в системата на клиниката.",
        "invalid": "Връзката не е валидна. Използвайте връзката от задачата такава, каквато "
        "е изпратена.",
        "cross_site": "Тази форма може да се изпрати само от собствената ѝ страница.",
        "bad_callback": "Посочете дата и час за обаждане.",
        "report_links": "Запишете резултата (с едно натискане)",
        "no_result": "още няма резултат",
        "shared_number": "Номерът се ползва от {count} пациенти: преди да давате подробности, "
        "уверете се, че говорите с пациента.",
    },
}


# The patient's rebooking page (rebook_links.py): care first, plain words, first name only.
PATIENT_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "rebook_title": "Choose a new time",
        "hello": "Hello, {name}.",
        "hello_anonymous": "Hello.",
        "stage": "The next step of your treatment: {stage}.",
        "stage_by": "It should happen by {date}.",
        "free_times": "Free times",
        "book": "Ask for this time",
        "no_slots": "There is no free time we can offer here before {date}.",
        "slots_unavailable": "We cannot show free times right now.",
        "none_fit": "None of these fit? We will call you.",
        "call_when": "When may we call?",
        "call_soon": "As soon as possible",
        "call_me": "Call me back",
        "requested": "Thank you. We asked the clinic to book {time} for you. The clinic "
        "confirms it: until then the time is requested, not yet booked.",
        "confirmed": "Your visit on {time} is booked. Thank you.",
        "callback_asked": "Thank you. The clinic will call you.",
        "callback_asked_at": "Thank you. The clinic will call you around {time}.",
        "taken": "Sorry: that time was just taken. Here are the next free times.",
        "choose": "Please choose a time.",
        "used": "This link was already used. Nothing was changed.",
        "expired": "This link has expired. Please call the clinic at {phone}.",
        "invalid": "This link is not valid. Please use the link from our message as it was "
        "sent, or call the clinic at {phone}.",
        "cross_site": "This form can only be sent from its own page.",
        "call_clinic": "You can also call the clinic at {phone}.",
    },
    "lt": {
        "rebook_title": "Pasirinkite naują laiką",
        "hello": "Sveiki, {name}.",
        "hello_anonymous": "Sveiki.",
        "stage": "Kitas jūsų gydymo etapas: {stage}.",
        "stage_by": "Jis turėtų įvykti iki {date}.",
        "free_times": "Laisvi laikai",
        "book": "Prašyti šio laiko",
        "no_slots": "Iki {date} čia negalime pasiūlyti laisvo laiko.",
        "slots_unavailable": "Šiuo metu negalime parodyti laisvų laikų.",
        "none_fit": "Netinka nė vienas? Mes jums paskambinsime.",
        "call_when": "Kada galime paskambinti?",
        "call_soon": "Kuo greičiau",
        "call_me": "Paskambinkite man",
        "requested": "Ačiū. Paprašėme klinikos užregistruoti jus {time}. Klinika tai "
        "patvirtins: iki tol laikas yra prašomas, dar neužregistruotas.",
        "confirmed": "Jūsų vizitas {time} užregistruotas. Ačiū.",
        "callback_asked": "Ačiū. Klinika jums paskambins.",
        "callback_asked_at": "Ačiū. Klinika jums paskambins apie {time}.",
        "taken": "Atsiprašome: šis laikas ką tik buvo užimtas. Štai kiti laisvi laikai.",
        "choose": "Pasirinkite laiką.",
        "used": "Ši nuoroda jau panaudota. Niekas nepakeista.",
        "expired": "Šios nuorodos galiojimas baigėsi. Skambinkite klinikai {phone}.",
        "invalid": "Ši nuoroda negalioja. Naudokite nuorodą iš mūsų žinutės tokią, kokia ji "
        "buvo išsiųsta, arba skambinkite klinikai {phone}.",
        "cross_site": "Šią formą galima siųsti tik iš jos pačios puslapio.",
        "call_clinic": "Taip pat galite skambinti klinikai {phone}.",
    },
    "ru": {
        "rebook_title": "Выберите новое время",
        "hello": "Здравствуйте, {name}.",
        "hello_anonymous": "Здравствуйте.",
        "stage": "Следующий этап вашего лечения: {stage}.",
        "stage_by": "Он должен пройти до {date}.",
        "free_times": "Свободное время",
        "book": "Попросить это время",
        "no_slots": "Здесь нет свободного времени до {date}.",
        "slots_unavailable": "Сейчас мы не можем показать свободное время.",
        "none_fit": "Ничего не подходит? Мы вам позвоним.",
        "call_when": "Когда вам позвонить?",
        "call_soon": "Как можно скорее",
        "call_me": "Перезвоните мне",
        "requested": "Спасибо. Мы попросили клинику записать вас на {time}. Клиника это "
        "подтвердит: до тех пор время запрошено, но ещё не забронировано.",
        "confirmed": "Ваш визит {time} забронирован. Спасибо.",
        "callback_asked": "Спасибо. Клиника вам позвонит.",
        "callback_asked_at": "Спасибо. Клиника позвонит вам около {time}.",
        "taken": "Извините: это время только что заняли. Вот следующее свободное время.",
        "choose": "Пожалуйста, выберите время.",
        "used": "Эта ссылка уже использована. Ничего не изменено.",
        "expired": "Срок действия ссылки истёк. Позвоните в клинику: {phone}.",
        "invalid": "Ссылка недействительна. Откройте ссылку из нашего сообщения в том виде, "
        "в каком она пришла, или позвоните в клинику: {phone}.",
        "cross_site": "Эту форму можно отправить только с её собственной страницы.",
        "call_clinic": "Вы также можете позвонить в клинику: {phone}.",
    },
    "bg": {
        "rebook_title": "Изберете нов час",
        "hello": "Здравейте, {name}.",
        "hello_anonymous": "Здравейте.",
        "stage": "Следващата стъпка от лечението ви: {stage}.",
        "stage_by": "Тя трябва да е до {date}.",
        "free_times": "Свободни часове",
        "book": "Поискайте този час",
        "no_slots": "Тук няма свободен час, който да предложим преди {date}.",
        "slots_unavailable": "В момента не можем да покажем свободните часове.",
        "none_fit": "Нищо не е удобно? Ще ви се обадим.",
        "call_when": "Кога да ви се обадим?",
        "call_soon": "Възможно най-скоро",
        "call_me": "Обадете ми се",
        "requested": "Благодарим ви. Помолихме клиниката да ви запише за {time}. Клиниката "
        "ще го потвърди: дотогава часът е поискан, но още не е записан.",
        "confirmed": "Часът ви на {time} е записан. Благодарим ви.",
        "callback_asked": "Благодарим ви. Клиниката ще ви се обади.",
        "callback_asked_at": "Благодарим ви. Клиниката ще ви се обади около {time}.",
        "taken": "Съжаляваме: този час току-що беше зает. Ето следващите свободни часове.",
        "choose": "Моля, изберете час.",
        "used": "Тази връзка вече е използвана. Нищо не е променено.",
        "expired": "Връзката е изтекла. Моля, обадете се в клиниката: {phone}.",
        "invalid": "Връзката не е валидна. Използвайте връзката от нашето съобщение такава, "
        "каквато е изпратена, или се обадете в клиниката: {phone}.",
        "cross_site": "Тази форма може да се изпрати само от нейната страница.",
        "call_clinic": "Можете да се обадите и в клиниката: {phone}.",
    },
}


def language_of(language: str | None) -> str:
    """The supported language for a tag ("lt-LT" -> "lt"), else English."""
    base = (language or "").split("-", 1)[0].lower()
    return base if base in LANGUAGES else FALLBACK


def pick_language(accept_language: str | None, default: str) -> str:
    """The first supported language of an Accept-Language header (by q), else ``default``."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        base = tag.split("-", 1)[0].lower()
        if base in LANGUAGES and q > 0:
            ranked.append((-q, index, base))
    return sorted(ranked)[0][2] if ranked else language_of(default)


def word(language: str, key: str, **values: object) -> str:
    table = WORDS.get(language_of(language), WORDS[FALLBACK])
    return table.get(key, WORDS[FALLBACK][key]).format(**values)


def patient_word(language: str, key: str, **values: object) -> str:
    """The rebooking page's words in the patient's language (English for a missing one)."""
    table = PATIENT_WORDS.get(language_of(language), PATIENT_WORDS[FALLBACK])
    return table.get(key, PATIENT_WORDS[FALLBACK][key]).format(**values)


def _label(tables: dict[str, dict[str, str]], language: str, code: str) -> str:
    found = tables.get(language_of(language), {}).get(code) or tables[FALLBACK].get(code)
    return found or code.replace("_", " ")


def result_label(language: str, outcome: str | None) -> str:
    return _label(RESULTS, language, outcome) if outcome else word(language, "no_result")


def reason_label(language: str, reason: str) -> str:
    return _label(REASONS, language, reason)


def channel_label(language: str, channel: str) -> str:
    return _label(CHANNELS, language, channel)


def _locale(language: str) -> Locale:
    """Babel's locale for a tag ("lt-LT", "pt_BR"), the base language if the region is
    unknown, else English."""
    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(language.split("-", 1)[0]) if "-" in language else Locale("en")


def _long_date(local: datetime, locale: Locale | str) -> str:
    return str(format_date(local.date(), "long", locale=locale))


def _short_time(local: datetime, locale: Locale | str) -> str:
    return str(format_time(local.time(), "short", locale=locale))


def local_datetime(moment: datetime, zone: str, language: str) -> str:
    """``moment`` in the clinic's zone, in the clinic's language, the zone named:
    "March 2, 2026 10:00 (Europe/Vilnius)", "2026 m. kovo 2 d. 10:00 (Europe/Vilnius)"."""
    local = moment.astimezone(ZoneInfo(zone))
    locale = language_of(language)
    return f"{_long_date(local, locale)} {_short_time(local, locale)} ({zone})"


def local_date(moment: datetime, zone: str, language: str) -> str:
    """The date ``moment`` falls on in the clinic's zone ("2 марта 2026 г.")."""
    return _long_date(moment.astimezone(ZoneInfo(zone)), language_of(language))


# What the patient reads: in their own zone, without the zone named; plain spaces (GSM-7).
_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " "})


def _day(local: datetime, locale: Locale, short: bool) -> str:
    if short:  # without the year ("4 марта", "kovo 4 d."): an SMS about this season
        return str(format_skeleton("MMMMd", local, locale=locale))
    return _long_date(local, locale)


def format_visit_date(moment: datetime, zone: str, language: str, *, short: bool = False) -> str:
    """The day of ``moment`` in ``zone``, written out in ``language`` ("kovo 4 d.")."""
    local = moment.astimezone(ZoneInfo(zone))
    return _day(local, _locale(language), short).translate(_SPACES)


def format_visit_time(moment: datetime, zone: str, language: str, *, short: bool = False) -> str:
    """Day and time of ``moment`` in ``zone``, as ``language`` writes them."""
    locale = _locale(language)
    local = moment.astimezone(ZoneInfo(zone))
    day = _day(local, locale, short)
    clock = _short_time(local, locale)
    # CLDR's pattern joining date and time ("{1}, {0}", "{1} 'at' {0}"), as Babel does.
    pattern = str(get_datetime_format("medium", locale=locale)).replace("'", "")
    return pattern.replace("{0}", clock).replace("{1}", day).translate(_SPACES)
