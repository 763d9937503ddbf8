"""Swedish and English text of the web pages.

Every string a page shows comes from ``STRINGS`` (key -> {"sv": ..., "en": ...}); a test checks
that each key has both languages, so a page is never half translated. Swedish is the default:
the platform serves Swedish regions; English is for visiting researchers and reviewers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

LANGUAGES = ("sv", "en")
DEFAULT_LANGUAGE = "sv"
LANG_COOKIE = "hdp_lang"

STRINGS: Mapping[str, Mapping[str, str]] = {
    # --- layout
    "site_name": {"sv": "Hälsodataplattformen", "en": "Health data platform"},
    "skip_to_content": {"sv": "Hoppa till innehållet", "en": "Skip to content"},
    "main_navigation": {"sv": "Huvudmeny", "en": "Main navigation"},
    "language": {"sv": "Språk", "en": "Language"},
    "nav_review_queue": {"sv": "Granskningskö", "en": "Review queue"},
    "nav_researcher": {"sv": "Mina ansökningar och uttag", "en": "My requests and releases"},
    "nav_transparency": {"sv": "Offentligt register", "en": "Public register"},
    "nav_login": {"sv": "Logga in", "en": "Log in"},
    "logout": {"sv": "Logga ut", "en": "Log out"},
    "signed_in_as": {"sv": "Inloggad som", "en": "Signed in as"},
    "none": {"sv": "Inga", "en": "None"},
    "not_applicable": {"sv": "–", "en": "–"},
    "yes": {"sv": "Ja", "en": "Yes"},
    "no": {"sv": "Nej", "en": "No"},
    # --- login
    "login_title": {"sv": "Logga in", "en": "Log in"},
    "login_intro": {
        "sv": "Klistra in din API-nyckel (token). Den visas bara en gång när den skapas "
        "(hdp user token). Nyckeln sparas inte i webbläsaren.",
        "en": "Paste your API token. It is shown only once, when it is issued (hdp user token). "
        "The token is not stored in your browser.",
    },
    "token_label": {"sv": "API-nyckel", "en": "API token"},
    "login_button": {"sv": "Logga in", "en": "Log in"},
    "login_failed": {
        "sv": "Inloggningen misslyckades: okänd, återkallad eller felaktig nyckel.",
        "en": "Login failed: unknown, revoked or malformed token.",
    },
    "logged_out": {"sv": "Du är utloggad.", "en": "You are logged out."},
    # --- web sessions and single sign-on (access/web/sessions.py, access/web/oidc.py)
    "oidc_button": {"sv": "Logga in med {provider}", "en": "Sign in with {provider}"},
    "oidc_or_token": {"sv": "eller med din API-nyckel:", "en": "or with your API token:"},
    "oidc_signed_in": {"sv": "Du är inloggad.", "en": "You are signed in."},
    "oidc_continue": {"sv": "Fortsätt", "en": "Continue"},
    "oidc_provider_unreachable": {
        "sv": "Inloggningstjänsten svarar inte som den ska just nu. Försök igen senare eller logga in "
        "med din API-nyckel.",
        "en": "The sign-in service is not answering as it should. Try again later or log in with "
        "your API token.",
    },
    "oidc_provider_refused": {
        "sv": "Inloggningstjänsten avbröt inloggningen. Försök igen.",
        "en": "The sign-in service stopped the sign-in. Please try again.",
    },
    "oidc_state_mismatch": {
        "sv": "Inloggningen kunde inte verifieras (svaret hörde inte till den här webbläsaren). Försök igen.",
        "en": "The sign-in could not be verified (the answer did not belong to this browser). "
        "Please try again.",
    },
    "oidc_no_transaction": {
        "sv": "Inloggningen tog för lång tid eller startades i en annan webbläsare. Försök igen.",
        "en": "The sign-in took too long or was started in another browser. Please try again.",
    },
    "oidc_bad_id_token": {
        "sv": "Inloggningstjänstens intyg kunde inte verifieras. Inloggningen avbröts.",
        "en": "The sign-in service's identity token could not be verified. The sign-in was stopped.",
    },
    "oidc_no_user_claim": {
        "sv": "Inloggningstjänsten uppgav inget användarnamn. Kontakta administratören.",
        "en": "The sign-in service gave no user name. Please contact the administrator.",
    },
    "oidc_unknown_user": {
        "sv": "Du är inloggad hos inloggningstjänsten, men det finns inget aktivt konto på plattformen "
        "med ditt användarnamn. Konton skapas av administratören; kontakta denne.",
        "en": "You are signed in at the sign-in service, but the platform has no active account with "
        "your user name. Accounts are created by the administrator; please contact them.",
    },
    "session_expired": {
        "sv": "Din session har gått ut eller nyckeln har återkallats. Logga in igen.",
        "en": "Your session has expired or the token was revoked. Please log in again.",
    },
    "csrf_failed": {
        "sv": "Formuläret kunde inte verifieras (sessionen har bytts). Ladda om sidan och försök igen.",
        "en": "The form could not be verified (the session changed). Reload the page and try again.",
    },
    "forbidden": {
        "sv": "Du har inte behörighet till den här sidan.",
        "en": "You are not allowed to see this page.",
    },
    "not_found": {"sv": "Sidan eller ansökan finns inte.", "en": "The page or request does not exist."},
    # --- steward queue
    "queue_title": {"sv": "Granskningskö", "en": "Review queue"},
    "queue_intro": {
        "sv": "Ansökningar som rör dina dataägare ({holders}). Du ser bara ansökningar där minst en "
        "av dina dataägare ingår.",
        "en": "Requests involving your data holders ({holders}). You only see requests in which at "
        "least one of your data holders is in scope.",
    },
    "awaiting_decision": {"sv": "Väntar på beslut", "en": "Awaiting decision"},
    "other_requests": {"sv": "Övriga ansökningar", "en": "Other requests"},
    "no_requests_waiting": {
        "sv": "Inga ansökningar väntar på ditt beslut.",
        "en": "No requests await your decision.",
    },
    "col_request": {"sv": "Ansökan", "en": "Request"},
    "col_project": {"sv": "Projekt", "en": "Project"},
    "col_applicant": {"sv": "Sökande", "en": "Applicant"},
    "col_status": {"sv": "Status", "en": "Status"},
    "col_holders": {"sv": "Dataägare", "en": "Data holders"},
    "col_due": {"sv": "Beslut senast", "en": "Decision due"},
    "col_submitted": {"sv": "Inskickad", "en": "Submitted"},
    "col_your_holder": {"sv": "Din dataägare", "en": "Your data holder"},
    "open_request": {"sv": "Öppna ansökan {id}", "en": "Open request {id}"},
    # --- request page
    "request_title": {"sv": "Ansökan {id}: {project}", "en": "Request {id}: {project}"},
    "request_details": {"sv": "Ansökan", "en": "Request"},
    "field_purpose": {"sv": "Ändamål", "en": "Purpose"},
    "field_legal_basis": {"sv": "Rättslig grund", "en": "Legal basis"},
    "field_ethics_ref": {"sv": "Etikprövning (diarienummer)", "en": "Ethics approval (reference)"},
    "field_members": {"sv": "Projektmedlemmar", "en": "Project members"},
    "field_period": {"sv": "Period", "en": "Period"},
    "field_data_form": {"sv": "Dataform", "en": "Data form"},
    "field_pseudonymisation_justification": {
        "sv": "Motivering för pseudonymiserade data",
        "en": "Justification for pseudonymised data",
    },
    "field_output_tier": {"sv": "Utdatanivå", "en": "Output tier"},
    "field_access_days": {"sv": "Åtkomst (dagar)", "en": "Access (days)"},
    "field_cohort_criteria": {"sv": "Urvalskriterier", "en": "Cohort criteria"},
    "field_variables": {"sv": "Variabler", "en": "Variables"},
    "field_review_round": {"sv": "Granskningsomgång", "en": "Review round"},
    "data_form_anonymised": {"sv": "anonymiserade", "en": "anonymised"},
    "data_form_pseudonymised": {"sv": "pseudonymiserade", "en": "pseudonymised"},
    "tier_record": {"sv": "radnivå", "en": "record level"},
    "tier_aggregate": {"sv": "endast aggregat", "en": "aggregates only"},
    "col_variable": {"sv": "Variabel", "en": "Variable"},
    "col_sensitivity": {"sv": "Känslighet", "en": "Sensitivity"},
    "sens_pseudonym": {"sv": "pseudonym (länknyckel)", "en": "pseudonym (linkage key)"},
    "sens_quasi_identifier": {"sv": "indirekt identifierande", "en": "quasi-identifier"},
    "sens_health": {"sv": "hälsouppgift", "en": "health data"},
    "sens_administrative": {"sv": "administrativ", "en": "administrative"},
    "sens_unknown": {"sv": "okänd (ej i katalogen)", "en": "unknown (not in catalogue)"},
    "reviews_title": {"sv": "Dataägarnas granskning", "en": "Data holders' review"},
    "col_verdict": {"sv": "Utfall", "en": "Verdict"},
    "col_reviewers_required": {"sv": "Granskare som krävs", "en": "Reviewers required"},
    "decisions_title": {"sv": "Beslut", "en": "Decisions"},
    "col_reviewer": {"sv": "Granskare", "en": "Reviewer"},
    "col_decision": {"sv": "Beslut", "en": "Decision"},
    "col_justification": {"sv": "Motivering", "en": "Justification"},
    "col_when": {"sv": "Tidpunkt", "en": "When"},
    "no_decisions": {"sv": "Inga beslut ännu.", "en": "No decisions yet."},
    # statuses and verdicts
    "status_draft": {"sv": "utkast", "en": "draft"},
    "status_submitted": {"sv": "inskickad", "en": "submitted"},
    "status_under_review": {"sv": "under granskning", "en": "under review"},
    "status_approved": {"sv": "godkänd", "en": "approved"},
    "status_rejected": {"sv": "avslagen", "en": "rejected"},
    "status_returned": {"sv": "återsänd för komplettering", "en": "returned for changes"},
    "status_released": {"sv": "utlämnad", "en": "released"},
    "status_expired": {"sv": "utgången", "en": "expired"},
    "status_revoked": {"sv": "återkallad", "en": "revoked"},
    "status_active": {"sv": "aktiv", "en": "active"},
    "status_pending": {"sv": "väntar", "en": "pending"},
    "decision_approve": {"sv": "Godkänn", "en": "Approve"},
    "decision_reject": {"sv": "Avslå", "en": "Reject"},
    "decision_return": {"sv": "Återsänd för komplettering", "en": "Return for changes"},
    "past_approve": {"sv": "godkänt", "en": "approved"},
    "past_reject": {"sv": "avslaget", "en": "rejected"},
    "past_return": {"sv": "återsänt", "en": "returned"},
    # quality
    "quality_title": {"sv": "Datakvalitet", "en": "Data quality"},
    "quality_release_label": {"sv": "Kvalitetsetikett för utlämnandet", "en": "Quality label of the release"},
    "quality_latest_gate": {
        "sv": "Senaste kvalitetskontroll (forskningszon), {holder}",
        "en": "Latest quality gate (research zone), {holder}",
    },
    "quality_none": {"sv": "Inga kvalitetsresultat ännu.", "en": "No quality results yet."},
    "quality_unavailable": {
        "sv": "Kvalitetsresultaten kunde inte läsas ({reason}).",
        "en": "Quality results could not be read ({reason}).",
    },
    "quality_run": {"sv": "Körning {run} ({at})", "en": "Run {run} ({at})"},
    "quality_counts": {
        "sv": "{pass} godkända, {warn} varningar, {fail} underkända, {error} fel, {skipped} hoppade över",
        "en": "{pass} passed, {warn} warnings, {fail} failed, {error} errors, {skipped} skipped",
    },
    "quality_blocking": {"sv": "Blockerande fel", "en": "Blocking failures"},
    "col_check": {"sv": "Kontroll", "en": "Check"},
    "col_severity": {"sv": "Allvarlighet", "en": "Severity"},
    "col_failed_rows": {"sv": "Underkända rader", "en": "Failed rows"},
    "col_threshold": {"sv": "Tolererat", "en": "Tolerated"},
    "quality_not_passed_checks": {"sv": "Kontroller som inte klarades", "en": "Checks that did not pass"},
    # disclosure pre-check
    "precheck_title": {"sv": "Röjandekontroll i förväg", "en": "Disclosure pre-check"},
    "precheck_intro": {
        "sv": "Vilka begärda variabler som är indirekt identifierande eller pseudonymer, dataägarnas "
        "gränsvärden och minsta gruppstorlek över de begärda indirekt identifierande variablerna "
        "i dataägarnas forskningszoner (endast antal).",
        "en": "Which requested variables are quasi-identifiers or pseudonyms, the data holders' "
        "thresholds, and the smallest group size over the requested quasi-identifiers in the "
        "holders' research zones (counts only).",
    },
    "precheck_caveat": {
        "sv": "Beräknat på hela forskningszonens tabell före urval och före utlämnandets generalisering: "
        "urvalet kan göra grupper mindre, generaliseringen större.",
        "en": "Computed over the whole research-zone table, before cohort selection and before the "
        "release's generalisation: selection can make groups smaller, generalisation larger.",
    },
    "precheck_thresholds": {"sv": "Dataägarnas gränsvärden", "en": "Data holders' thresholds"},
    "col_min_cell_count": {"sv": "Minsta cellstorlek", "en": "Minimum cell count"},
    "col_k_anonymity": {"sv": "k-anonymitet", "en": "k-anonymity"},
    "precheck_groups": {"sv": "Gruppstorlekar", "en": "Group sizes"},
    "col_table": {"sv": "Tabell", "en": "Table"},
    "col_quasi_identifiers": {"sv": "Indirekt identifierande", "en": "Quasi-identifiers"},
    "col_persons": {"sv": "Personer", "en": "Persons"},
    "col_groups": {"sv": "Grupper", "en": "Groups"},
    "col_smallest_group": {"sv": "Minsta grupp", "en": "Smallest group"},
    "col_groups_below_k": {"sv": "Grupper under k", "en": "Groups below k"},
    "col_persons_below_k": {"sv": "Personer i grupper under k", "en": "Persons in groups below k"},
    "col_assessment": {"sv": "Bedömning", "en": "Assessment"},
    "risk_ok": {"sv": "uppfyller k", "en": "meets k"},
    "risk_at_risk": {"sv": "RISK: grupper under k", "en": "AT RISK: groups below k"},
    "risk_no_quasi": {"sv": "inga indirekt identifierande variabler", "en": "no quasi-identifiers requested"},
    "risk_no_data": {"sv": "ingen forskningszon ännu", "en": "no research zone yet"},
    "risk_unavailable": {"sv": "kunde inte beräknas", "en": "could not be computed"},
    "precheck_no_tables": {
        "sv": "Inga begärda tabeller hos dataägarna i omfånget.",
        "en": "No requested tables at the holders in scope.",
    },
    # decision form
    "decide_title": {"sv": "Fatta beslut", "en": "Decide"},
    "decide_for_holder": {"sv": "Beslut för dataägare", "en": "Decision for data holder"},
    "decision_legend": {"sv": "Beslut", "en": "Decision"},
    "justification_label": {
        "sv": "Motivering (krävs, minst 10 tecken)",
        "en": "Justification (required, at least 10 characters)",
    },
    "justification_help": {
        "sv": "Motiveringen sparas i ansökans historik och visas för den sökande.",
        "en": "The justification is kept in the request's history and shown to the applicant.",
    },
    "submit_decision": {"sv": "Registrera beslut", "en": "Record decision"},
    "decision_recorded": {
        "sv": "Beslutet är registrerat. Ansökans status: {status}.",
        "en": "Decision recorded. Request status: {status}.",
    },
    "decision_error": {
        "sv": "Beslutet kunde inte registreras: {message}",
        "en": "The decision could not be recorded: {message}",
    },
    "nothing_to_decide": {
        "sv": "Det finns inget beslut för dig att fatta i den här omgången.",
        "en": "There is no decision for you to take in this round.",
    },
    # --- steward decision aids on the request page (access/web/request_aids.py, datadocs.py)
    "period_open": {"sv": "Ingen period angiven", "en": "No period given"},
    "period_from": {"sv": "från {start}", "en": "from {start}"},
    "period_until": {"sv": "till och med {end}", "en": "until {end}"},
    "field_organisation": {"sv": "Organisation", "en": "Organisation"},
    "organisation_unknown": {"sv": "ej registrerad", "en": "not recorded"},
    "field_permit_end": {"sv": "Tillståndet upphör", "en": "Permit ends"},
    "permit_end_projected": {
        "sv": "{days} dagar efter beslutet (omkring {date} om det beviljas i dag)",
        "en": "{days} days after approval (about {date} if approved today)",
    },
    "cohort_title": {
        "sv": "Kohortens storlek efter urvalskriterierna",
        "en": "Cohort size after the criteria",
    },
    "cohort_intro": {
        "sv": "Personer per dataägare i forskningszonen som uppfyller urvalskriterierna, före samkörning "
        "mellan dataägare och innan personer som avböjt tas bort. Antal under dataägarens minsta "
        "cellstorlek visas som ”< n”; övriga avrundas som dataägaren publicerar antal.",
        "en": "Persons per data holder in the research zone who meet the cohort criteria, before linkage "
        "across holders and before persons who opted out are removed. Counts below the holder's "
        "minimum cell count show as “< n”; others are rounded as the holder publishes counts.",
    },
    "col_cohort_persons": {"sv": "Personer", "en": "Persons"},
    "cohort_not_applied": {
        "sv": "kriterier på {tables} tillämpas inte här (dataägaren har inte tabellen)",
        "en": "criteria on {tables} not applied here (the holder does not hold the table)",
    },
    "overlaps_title": {"sv": "Sökandens överlappande tillstånd", "en": "The applicant's overlapping permits"},
    "overlaps_intro": {
        "sv": "Andra gällande tillstånd för samma sökande som rör samma dataägare eller variabler. Uttag "
        "som kan samköras ökar risken för återidentifiering.",
        "en": "Other permits in force of the same applicant that touch the same data holders or "
        "variables. Extracts that can be linked raise the risk of re-identification.",
    },
    "overlaps_none": {
        "sv": "Inga andra gällande tillstånd överlappar.",
        "en": "No other permit in force overlaps.",
    },
    "col_shared_holders": {"sv": "Gemensamma dataägare", "en": "Shared data holders"},
    "col_shared_variables": {"sv": "Gemensamma variabler", "en": "Shared variables"},
    "quality_verdict_pass": {"sv": "Godkänd", "en": "Passed"},
    "quality_verdict_warn": {"sv": "Godkänd med varningar", "en": "Passed with warnings"},
    "quality_verdict_fail": {"sv": "Underkänd", "en": "Failed"},
    "quality_summary": {
        "sv": "{verdict} {day}: {passed} kontroller godkända, {failed} ej godkända",
        "en": "{verdict} on {day}: {passed} checks passed, {failed} not passed",
    },
    "quality_run_id": {"sv": "körnings-id {run}", "en": "run id {run}"},
    "quality_docs_link": {"sv": "Data Docs (kvalitetsrapport)", "en": "Data Docs (quality report)"},
    "quality_release_summary": {
        "sv": "{verdict}: {passed} av {evaluated} kontroller godkända",
        "en": "{verdict}: {passed} of {evaluated} checks passed",
    },
    "quality_failed_checks": {"sv": "Underkända kontroller", "en": "Failed checks"},
    "quality_warned_checks": {"sv": "Varningar", "en": "Warnings"},
    "five_safes_title": {"sv": "De fem säkerheterna (Five Safes)", "en": "Five Safes"},
    "five_safes_intro": {
        "sv": "Bocka för varje säkerhet du har bedömt. Bockarna sparas med ditt beslut.",
        "en": "Tick each safe you have assessed. Your ticks are stored with your decision.",
    },
    "safe_projects": {"sv": "Säkert projekt", "en": "Safe projects"},
    "safe_people": {"sv": "Säkra personer", "en": "Safe people"},
    "safe_settings": {"sv": "Säker miljö", "en": "Safe settings"},
    "safe_data": {"sv": "Säkra data", "en": "Safe data"},
    "safe_outputs": {"sv": "Säkra resultat", "en": "Safe outputs"},
    "safe_projects_facts": {
        "sv": "Etikprövning {ethics}; ändamål {purpose}; rättslig grund {basis}.",
        "en": "Ethics approval {ethics}; purpose {purpose}; legal basis {basis}.",
    },
    "safe_people_facts": {
        "sv": "Sökande {applicant} ({organisation}); medarbetare: {members}; andra överlappande tillstånd: {overlaps}.",
        "en": "Applicant {applicant} ({organisation}); members: {members}; other overlapping permits: {overlaps}.",
    },
    "safe_settings_facts_aggregate": {
        "sv": "Endast aggregat genom åtkomstlagret: inga rader lämnar plattformen, varje fråga loggas; "
        "åtkomst i {days} dagar.",
        "en": "Aggregates only through the access layer: no row leaves the platform, every query is "
        "logged; access for {days} days.",
    },
    "safe_settings_facts_record": {
        "sv": "Radnivå i den säkra miljön (arbetsytan): data lämnar den inte, varje fråga loggas; "
        "åtkomst i {days} dagar.",
        "en": "Record level inside the secure environment (the workspace): data does not leave it, every "
        "query is logged; access for {days} days.",
    },
    "safe_data_facts": {
        "sv": "{form} data; minsta cellstorlek / k per dataägare: {thresholds}; tabeller med grupper under k: {at_risk}.",
        "en": "{form} data; minimum cell count / k per holder: {thresholds}; tables with groups below k: {at_risk}.",
    },
    "safe_outputs_facts_aggregate": {
        "sv": "Varje resultat röjandekontrolleras: celler under minsta cellstorlek undertrycks och antal "
        "störs med cell-key-metoden.",
        "en": "Every result is disclosure-controlled: cells below the minimum cell count are suppressed "
        "and counts perturbed by the cell-key method.",
    },
    "safe_outputs_facts_record": {
        "sv": "Resultat som ska lämna den säkra miljön granskas av resultatgranskare innan de lämnas ut.",
        "en": "Results that are to leave the secure environment are checked by output checkers first.",
    },
    "ack_at_risk_label": {"sv": "Jag har sett grupperna med risk", "en": "I have seen the groups at risk"},
    "ack_at_risk_hint": {
        "sv": "Förkontrollen visar grupper under k i {tables} tabell(er). Ett godkännande kräver att du "
        "bekräftar att du har sett dem.",
        "en": "The pre-check shows groups below k in {tables} table(s). Approving requires that you "
        "confirm you have seen them.",
    },
    "ack_at_risk_required": {
        "sv": "förkontrollen visar grupper under k i {tables} tabell(er): bekräfta att du har sett "
        "grupperna med risk innan du godkänner",
        "en": "the pre-check shows groups below k in {tables} table(s): confirm that you have seen the "
        "groups at risk before approving",
    },
    "col_checklist": {"sv": "Checklista", "en": "Checklist"},
    "checklist_ticked": {"sv": "{ticked} av 5 säkerheter", "en": "{ticked} of 5 safes"},
    "checklist_ack": {"sv": "risk bekräftad", "en": "risk acknowledged"},
    "comments_title": {"sv": "Kommentarer", "en": "Comments"},
    "comments_intro": {
        "sv": "Förvaltarna hos dataägarna och den sökande sidan kan läsa och skriva här. Endast ren text.",
        "en": "The data holders' stewards and the applicant's side can read and write here. Plain text only.",
    },
    "comments_none": {"sv": "Inga kommentarer ännu.", "en": "No comments yet."},
    "thread_label": {"sv": "Ny kommentar", "en": "New comment"},
    "thread_submit": {"sv": "Skicka kommentar", "en": "Post comment"},
    "thread_posted": {"sv": "Kommentaren är publicerad.", "en": "Your comment was posted."},
    "thread_error": {
        "sv": "Kommentaren kunde inte sparas: {message}",
        "en": "The comment could not be saved: {message}",
    },
    # researcher page
    "researcher_title": {"sv": "Mina ansökningar och uttag", "en": "My requests and releases"},
    "my_requests": {"sv": "Mina ansökningar", "en": "My requests"},
    "no_my_requests": {"sv": "Du har inga ansökningar.", "en": "You have no requests."},
    "my_releases": {"sv": "Mina uttag", "en": "My releases"},
    "no_my_releases": {"sv": "Du har inga aktiva uttag.", "en": "You have no active releases."},
    "col_release": {"sv": "Uttag", "en": "Release"},
    "col_expires": {"sv": "Giltigt till", "en": "Valid until"},
    "col_tier": {"sv": "Utdatanivå", "en": "Output tier"},
    "col_variables_count": {"sv": "Variabler", "en": "Variables"},
    "howto_title": {"sv": "Så frågar du ditt uttag", "en": "How to query your release"},
    "howto_intro": {
        "sv": "Frågor körs i plattformens säkra miljö. Du ser bara variablerna i ditt tillstånd; "
        "personer som har dragit tillbaka sitt samtycke tas bort vid varje fråga, små antal "
        "döljs och varje fråga loggas.",
        "en": "Queries run inside the platform's secure environment. You see only the variables in "
        "your permit; persons who withdrew consent are removed at every query, small counts "
        "are suppressed and every query is logged.",
    },
    "howto_curl": {"sv": "Med curl", "en": "With curl"},
    "howto_python": {
        "sv": "Med Python-klienten (access.client)",
        "en": "With the Python client (access.client)",
    },
    "howto_sql": {"sv": "SQL-exempel", "en": "SQL examples"},
    "howto_token_note": {
        "sv": "Sätt miljövariabeln HDP_TOKEN till din API-nyckel; skriv aldrig nyckeln i skript som delas.",
        "en": "Set the environment variable HDP_TOKEN to your API token; never write the token into shared scripts.",
    },
    "howto_release_placeholder": {"sv": "UTTAGS-ID", "en": "RELEASE-ID"},
    # transparency
    "transparency_title": {
        "sv": "Offentligt register över datatillstånd",
        "en": "Public register of data permits",
    },
    "transparency_intro": {
        "sv": "Alla tillstånd att använda hälsodata för sekundära ändamål som plattformen har utfärdat: "
        "projekt, ändamål, dataägare och giltighet. Registret innehåller inga personuppgifter.",
        "en": "Every permit to use health data for secondary purposes that the platform has issued: "
        "project, purpose, data holders and validity. The register holds no personal data.",
    },
    "transparency_json": {"sv": "Registret som JSON", "en": "The register as JSON"},
    "transparency_empty": {
        "sv": "Inga tillstånd har utfärdats ännu.",
        "en": "No permits have been issued yet.",
    },
    "col_permit": {"sv": "Tillstånd", "en": "Permit"},
    "col_issued": {"sv": "Utfärdat", "en": "Issued"},
    "col_released": {"sv": "Utlämnat", "en": "Released"},
    "col_purpose": {"sv": "Ändamål", "en": "Purpose"},
    "transparency_caption": {"sv": "Tillstånd: {count}, äldst först", "en": "Permits: {count}, oldest first"},
    "purposes_title": {"sv": "Ändamål (EHDS art. 53.1)", "en": "Purposes (EHDS art. 53(1))"},
    "error_title": {"sv": "Något gick fel", "en": "Something went wrong"},
    "back_to_start": {"sv": "Till startsidan", "en": "Back to the start page"},
    # --- the airlock: output requests, checking, exceptions
    # navigation
    "nav_outputs": {"sv": "Mina utdata", "en": "My outputs"},
    "nav_checking": {"sv": "Utdatagranskning", "en": "Output checking"},
    "status_withdrawn": {"sv": "återtagen", "en": "withdrawn"},
    # researcher: my outputs
    "outputs_title": {"sv": "Mina utdata", "en": "My outputs"},
    "outputs_intro": {
        "sv": "Resultat på radnivå lämnar den säkra miljön bara efter utdatagranskning (EHDS art. 73): "
        "en fil eller ett resultat med fler än {rows} rader blir en begäran om utdata, som två "
        "granskare, aldrig du själv eller någon annan i projektet, godkänner innan du kan ladda ner den. "
        "Aggregerade resultat från ett tillstånd för endast aggregat är redan röjandekontrollerade och "
        "kan hämtas direkt.",
        "en": "Record-level results leave the secure environment only after output checking (EHDS art. 73): "
        "a file, or a result of more than {rows} rows, becomes an output request that two output "
        "checkers, never you or anyone else on the project, approve before you can download it. "
        "Aggregate results of an aggregate-only permit are already disclosure-controlled and leave "
        "directly.",
    },
    "outputs_mine": {"sv": "Mina begäranden om utdata", "en": "My output requests"},
    "outputs_none": {"sv": "Du har inga begäranden om utdata.", "en": "You have no output requests."},
    "output_new_title": {"sv": "Begär utdata från en fråga", "en": "Request an output from a query"},
    "output_new_none": {
        "sv": "Du har inget aktivt tillstånd på radnivå. Aggregerade resultat hämtar du direkt med en fråga.",
        "en": "You have no active record-level permit. Aggregate results are fetched directly with a query.",
    },
    "field_release": {"sv": "Uttag (tillstånd på radnivå)", "en": "Release (record-level permit)"},
    "field_sql": {"sv": "SQL-fråga", "en": "SQL query"},
    "field_sql_help": {
        "sv": "Frågan körs i den säkra miljön; resultatet sparas där tills det är granskat.",
        "en": "The query runs in the secure environment; its result is kept there until it is checked.",
    },
    "field_format": {"sv": "Filformat", "en": "File format"},
    "field_title": {
        "sv": "Vad är det? (rubrik, 3–200 tecken)",
        "en": "What is it? (title, 3-200 characters)",
    },
    "field_context": {
        "sv": "Varför röjer det ingen person? (minst 20 tecken)",
        "en": "Why does it not disclose anyone? (at least 20 characters)",
    },
    "field_context_help": {
        "sv": "Till exempel: minsta antal personer per cell, vilka variabler, vilken avrundning. "
        "Granskarna läser detta.",
        "en": "For example: the smallest number of persons in a cell, which variables, what rounding. "
        "The checkers read this.",
    },
    "output_submit": {"sv": "Skicka till granskning", "en": "Send for checking"},
    "output_created": {
        "sv": "Begäran {id} är skickad till granskning.",
        "en": "Output request {id} is sent for checking.",
    },
    "output_error": {"sv": "Det gick inte: {message}", "en": "That did not work: {message}"},
    "col_output": {"sv": "Utdata", "en": "Output"},
    "col_title": {"sv": "Rubrik", "en": "Title"},
    "col_format": {"sv": "Format", "en": "Format"},
    "col_rows": {"sv": "Rader", "en": "Rows"},
    "col_approvals": {"sv": "Godkännanden", "en": "Approvals"},
    "col_created": {"sv": "Skapad", "en": "Created"},
    "open_output": {"sv": "Öppna utdata {id}", "en": "Open output {id}"},
    # one output
    "output_title": {"sv": "Utdata {id}: {title}", "en": "Output {id}: {title}"},
    "output_details": {"sv": "Uppgifter", "en": "Details"},
    "field_requester": {"sv": "Begärd av", "en": "Requested by"},
    "field_round": {"sv": "Granskningsomgång", "en": "Checking round"},
    "field_query": {"sv": "Fråga (maskerad)", "en": "Query (masked)"},
    "field_columns": {"sv": "Kolumner", "en": "Columns"},
    "field_size": {"sv": "Storlek (byte)", "en": "Size (bytes)"},
    "field_sha256": {"sv": "SHA-256 för filen", "en": "SHA-256 of the file"},
    "field_row_level": {"sv": "Radnivå", "en": "Row level"},
    "field_row_level_reasons": {"sv": "Varför radnivå", "en": "Why row level"},
    "field_exception": {"sv": "Undantag från förvaltare", "en": "Steward's exception"},
    "field_context_given": {"sv": "Sammanhang från forskaren", "en": "Context from the researcher"},
    "field_downloads": {"sv": "Nedladdningar", "en": "Downloads"},
    "checks_title": {"sv": "Granskningar", "en": "Checks"},
    "no_checks": {"sv": "Inga granskningar ännu.", "en": "No checks yet."},
    "col_checker": {"sv": "Granskare", "en": "Checker"},
    "col_round": {"sv": "Omgång", "en": "Round"},
    "col_comment": {"sv": "Kommentar", "en": "Comment"},
    "download_title": {"sv": "Ladda ner", "en": "Download"},
    "download_button": {"sv": "Ladda ner utdata", "en": "Download the output"},
    "download_not_yet": {
        "sv": "Kan laddas ner först när två granskare har godkänt den ({approvals} av 2 hittills).",
        "en": "Can be downloaded only after two output checkers have approved it ({approvals} of 2 so far).",
    },
    "download_only_requester": {
        "sv": "Bara den som begärde utdata kan ladda ner dem.",
        "en": "Only the requester can download an output.",
    },
    "resubmit_title": {"sv": "Svara och skicka igen", "en": "Answer and send again"},
    "resubmit_help": {
        "sv": "En ny granskningsomgång börjar; tidigare godkännanden räknas inte. Skriv en ny fråga om "
        "resultatet ska bytas ut.",
        "en": "A new checking round starts; earlier approvals no longer count. Give a new query if the "
        "result is to be replaced.",
    },
    "field_new_sql": {"sv": "Ny SQL-fråga (valfri)", "en": "New SQL query (optional)"},
    "resubmit_button": {"sv": "Skicka igen", "en": "Send again"},
    "resubmitted": {"sv": "Skickad till en ny granskningsomgång.", "en": "Sent for a new round of checking."},
    "withdraw_button": {"sv": "Ta tillbaka begäran", "en": "Withdraw the request"},
    "withdrawn_notice": {
        "sv": "Begäran är tillbakatagen; filen är raderad.",
        "en": "The request is withdrawn; its file is deleted.",
    },
    # checker
    "checking_title": {"sv": "Utdatagranskning", "en": "Output checking"},
    "checking_intro": {
        "sv": "Utdata som ska lämna den säkra miljön. Två olika granskare måste godkänna varje begäran; "
        "en avslag eller återsändning avgör direkt. Du granskar aldrig begäranden från projekt där "
        "du själv finns med.",
        "en": "Outputs that are to leave the secure environment. Two different checkers must approve each "
        "request; one rejection or return decides at once. You never check requests from a project "
        "you are on.",
    },
    "checking_awaiting": {"sv": "Väntar på din granskning", "en": "Awaiting your check"},
    "checking_none": {"sv": "Inget väntar på din granskning.", "en": "Nothing awaits your check."},
    "checking_others": {"sv": "Övriga utdata du kan granska", "en": "Other outputs you may check"},
    "preview_title": {"sv": "Innehåll (de första {rows} raderna)", "en": "Content (the first {rows} rows)"},
    "preview_note": {
        "sv": "Granskare ser innehållet i den säkra miljön; visningen loggas.",
        "en": "Checkers see the content inside the secure environment; viewing is logged.",
    },
    "check_title": {"sv": "Granska", "en": "Check"},
    "check_legend": {"sv": "Beslut", "en": "Decision"},
    "comment_label": {
        "sv": "Kommentar (krävs, minst 10 tecken)",
        "en": "Comment (required, at least 10 characters)",
    },
    "comment_help": {
        "sv": "Kommentaren visas för forskaren och för den andra granskaren.",
        "en": "The comment is shown to the researcher and to the other checker.",
    },
    "check_button": {"sv": "Registrera granskning", "en": "Record check"},
    "check_recorded": {
        "sv": "Granskningen är registrerad. Status: {status}.",
        "en": "Check recorded. Status: {status}.",
    },
    "nothing_to_check": {
        "sv": "Det finns ingen granskning för dig att göra i den här omgången.",
        "en": "There is no check for you to make in this round.",
    },
    # stewards' exceptions
    "exceptions_title": {
        "sv": "Undantag för utdata på radnivå, tillstånd {id}",
        "en": "Exceptions for row-level outputs, permit {id}",
    },
    "exceptions_intro": {
        "sv": "Utdata på radnivå av pseudonymiserade data får begäras bara om en förvaltare för en dataägare "
        "i tillståndet har registrerat ett motiverat undantag. Varje sådan begäran granskas ändå av två "
        "granskare.",
        "en": "Row-level outputs of pseudonymised data may be requested only if a steward of a data holder "
        "in the permit has recorded a justified exception. Each such request is still checked by two "
        "output checkers.",
    },
    "exceptions_none": {"sv": "Inga undantag.", "en": "No exceptions."},
    "col_steward": {"sv": "Förvaltare", "en": "Steward"},
    "col_recorded": {"sv": "Registrerat", "en": "Recorded"},
    "col_withdrawn": {"sv": "Återkallat", "en": "Withdrawn"},
    "exception_new": {"sv": "Registrera undantag", "en": "Record an exception"},
    "exception_justification": {
        "sv": "Motivering (krävs, minst 30 tecken)",
        "en": "Justification (required, at least 30 characters)",
    },
    "exception_button": {"sv": "Registrera undantag", "en": "Record exception"},
    "exception_recorded": {"sv": "Undantaget är registrerat.", "en": "The exception is recorded."},
    "exception_withdraw": {"sv": "Återkalla", "en": "Withdraw"},
    "exception_withdrawn": {"sv": "Undantaget är återkallat.", "en": "The exception is withdrawn."},
    "exceptions_link": {"sv": "Undantag för tillståndet", "en": "The permit's exceptions"},
    # PROM key figures (access/web/prom.py)
    "prom_title": {"sv": "PROM-nyckeltal", "en": "PROM key figures"},
    "prom_hub_intro": {
        "sv": "Nyckeltal för patientrapporterade utfall (EQ-5D) per dataansvarig du förvaltar. "
        "Celler med för få personer visas inte.",
        "en": "Key figures of patient-reported outcomes (EQ-5D) for each data holder you steward. "
        "Cells with too few persons are not shown.",
    },
    "prom_holder_title": {"sv": "PROM-nyckeltal: {holder}", "en": "PROM key figures: {holder}"},
    "prom_intro": {
        "sv": "Källa: forskningszonens tabell {table}. Varje cell bygger på minst {k} personer "
        "(dataansvarigs gräns); annars visas bara skälet.",
        "en": "Source: the research zone's table {table}. Every cell rests on at least {k} persons "
        "(the holder's threshold); otherwise only the reason is shown.",
    },
    "prom_period": {"sv": "Period", "en": "Period"},
    "prom_by_year": {"sv": "Per år", "en": "By year"},
    "prom_by_quarter": {"sv": "Per kvartal", "en": "By quarter"},
    "prom_responses": {"sv": "Svar", "en": "Responses"},
    "prom_persons": {"sv": "Personer", "en": "Persons"},
    "prom_response_rate": {"sv": "Svarsfrekvens", "en": "Response rate"},
    "prom_mean_index": {"sv": "Medelindex (95 % KI)", "en": "Mean index (95% CI)"},
    "prom_mean_vas": {"sv": "Medel EQ VAS (95 % KI)", "en": "Mean EQ VAS (95% CI)"},
    "prom_improved": {"sv": "Andel förbättrade", "en": "Share improved"},
    "prom_withheld": {"sv": "Visas ej", "en": "Withheld"},
    "prom_reason_keyfigures.too_few_persons": {
        "sv": "för få personer",
        "en": "too few persons",
    },
    "prom_reason_keyfigures.small_complement": {
        "sv": "resten är för få personer",
        "en": "the rest are too few persons",
    },
    "prom_reason_keyfigures.no_denominator": {
        "sv": "ingen nämnare",
        "en": "no denominator",
    },
    "prom_reason_keyfigures.no_values": {"sv": "inga värden", "en": "no values"},
    "prom_no_denominator_note": {
        "sv": "Svarsfrekvens saknas: källan har ingen lista över inbjudna eller besökare att räkna mot.",
        "en": "No response rate: the source has no list of invited or visiting persons to count against.",
    },
    "prom_denominator_note": {
        "sv": "Svarsfrekvens: svarande bland personer med besök i registret ({table}) under perioden.",
        "en": "Response rate: responders among persons with a register visit ({table}) in the period.",
    },
    "prom_improved_note": {
        "sv": "Förbättrad: {measure} högre än vid föregående mätning ({rule}), räknat på uppföljningens period.",
        "en": "Improved: {measure} higher than at the previous measurement ({rule}), counted in the "
        "follow-up's period.",
    },
    "prom_rule_calendar_year": {"sv": "år mot år", "en": "year on year"},
    "prom_rule_window": {"sv": "tidsfönster", "en": "time window"},
    "prom_measure_index": {"sv": "index", "en": "index"},
    "prom_measure_vas": {"sv": "EQ VAS", "en": "EQ VAS"},
    "prom_measure_pchc": {"sv": "hälsoprofil (Pareto)", "en": "health profile (Paretian)"},
    "prom_chart_title": {
        "sv": "Medelindex per period med 95 % konfidensintervall",
        "en": "Mean index per period with 95% confidence interval",
    },
    "prom_chart_empty": {
        "sv": "Inget medelindex kan visas ännu.",
        "en": "No mean index can be shown yet.",
    },
    "prom_unavailable": {
        "sv": "Inga PROM-data i forskningszonen för {holder} ({reason}).",
        "en": "No PROM data in the research zone of {holder} ({reason}).",
    },
    "prom_open": {"sv": "Visa nyckeltal för {holder}", "en": "Show key figures for {holder}"},
    "prom_holder": {"sv": "Dataansvarig", "en": "Data holder"},
    # --- PROM key figures across the federation (the hub's public page)
    "prom_federation_title": {
        "sv": "PROM-nyckeltal i federationen",
        "en": "PROM key figures across the federation",
    },
    "prom_federation_intro": {
        "sv": "Varje nod beräknar sina nyckeltal själv under sin egen gräns för små celler och publicerar "
        "bara dem; navet ser aldrig ett enskilt svar. Federationens siffror är nodernas siffror sammanvägda.",
        "en": "Each node computes its key figures itself under its own small-cell threshold and publishes "
        "only those; the hub never sees a single response. The federation's figures pool the nodes' figures.",
    },
    "prom_federation_pooled": {"sv": "Hela federationen", "en": "Whole federation"},
    "prom_federation_empty": {
        "sv": "Ingen nod har publicerat PROM-nyckeltal ännu.",
        "en": "No node has published PROM key figures yet.",
    },
    "prom_federation_pool_note": {
        "sv": "Personer summeras över dataansvariga (en person hos två räknas två gånger). En cell som någon "
        "nod inte visar visas inte heller sammanvägd. Strängaste gränsen: {k} personer.",
        "en": "Persons are summed over holders (a person at two holders counts twice). A cell any node "
        "withheld is withheld in the pool too. Strictest threshold: {k} persons.",
    },
    "prom_reason_keyfigures.partial": {
        "sv": "någon nod visar inte sin del",
        "en": "a node withheld its part",
    },
    "prom_reason_keyfigures.rules_differ": {
        "sv": "noderna parar mätningar olika",
        "en": "the nodes pair measurements differently",
    },
    # --- application form (access/web/apply.py)
    "nav_apply": {"sv": "Ny ansökan", "en": "New application"},
    "apply_title": {"sv": "Ny ansökan om data", "en": "New data application"},
    "apply_edit_title": {"sv": "Ändra ansökan {id}", "en": "Edit application {id}"},
    "apply_intro": {
        "sv": "Fyll i ansökan. Spara den som utkast och skicka in den när den är klar: varje dataägare "
        "i ansökan granskar den. Alla fel visas vid fälten de gäller.",
        "en": "Fill in the application. Save it as a draft and submit it when it is ready: every data "
        "holder in it reviews it. Every problem is shown next to the field it concerns.",
    },
    "apply_view_request": {"sv": "Visa ansökan {id}", "en": "View application {id}"},
    "apply_returned_title": {"sv": "Återsänd för komplettering", "en": "Returned for changes"},
    "apply_returned_intro": {
        "sv": "Förvaltarna bad om ändringar. Ändra ansökan och skicka in den igen; den granskas då i en ny omgång.",
        "en": "The stewards asked for changes. Edit the application and submit it again; it is then "
        "reviewed in a new round.",
    },
    "apply_has_problems": {
        "sv": "Ansökan sparades inte. Rätta det som står vid fälten nedan.",
        "en": "The application was not saved. Correct what is said next to the fields below.",
    },
    "apply_project": {"sv": "Projekttitel (3–200 tecken)", "en": "Project title (3-200 characters)"},
    "apply_choose": {"sv": "– välj –", "en": "– choose –"},
    "apply_organisation": {"sv": "Din organisation", "en": "Your organisation"},
    "apply_organisation_none": {
        "sv": "inte registrerad på ditt konto (en administratör registrerar den; förvaltarna ser den i ansökan)",
        "en": "not recorded on your account (an administrator records it; stewards see it with the application)",
    },
    "apply_ethics_help": {
        "sv": "Etikprövningsmyndighetens diarienummer, till exempel 2024-01234-01.",
        "en": "The Ethical Review Authority's reference, for example 2024-01234-01.",
    },
    "apply_holders": {"sv": "Dataägare", "en": "Data holders"},
    "apply_variables_help": {
        "sv": "Variablerna i katalogen, per tabell, med sin känslighetsklass. Varje vald dataägare måste "
        "leverera minst en av dem.",
        "en": "The catalogue's variables, by table, with their disclosure class. Every chosen data holder "
        "must deliver at least one of them.",
    },
    "apply_delivered_by": {"sv": "levereras av {holders}", "en": "delivered by {holders}"},
    "apply_chosen": {"sv": "{n} valda", "en": "{n} chosen"},
    "apply_members": {"sv": "Projektmedlemmar (användarnamn)", "en": "Project members (user names)"},
    "apply_members_help": {
        "sv": "Kommaseparerade användarnamn för forskare som ska arbeta med datat; du själv ingår alltid.",
        "en": "Comma-separated user names of researchers who will work with the data; you are always included.",
    },
    "apply_period_help": {
        "sv": "Vilken tidsperiod datat ska gälla; båda fälten kan lämnas tomma.",
        "en": "The period the data should cover; either date may be left empty.",
    },
    "apply_period_start": {"sv": "Från", "en": "From"},
    "apply_period_end": {"sv": "Till", "en": "To"},
    "apply_cohort_criteria": {"sv": "Urvalskriterier (valfria)", "en": "Cohort criteria (optional)"},
    "apply_cohort_help": {
        "sv": 'Som JSON: variabel -> villkor, till exempel {"register_visit.birth_year": {"between": [1940, 1970]}}.',
        "en": 'As JSON: variable -> condition, for example {"register_visit.birth_year": {"between": [1940, 1970]}}.',
    },
    "apply_pseudo_help": {
        "sv": "Krävs för pseudonymiserade data och för data på radnivå (minst 30 tecken).",
        "en": "Required for pseudonymised data and for record-level data (at least 30 characters).",
    },
    "apply_access_days": {
        "sv": "Tillståndets längd i dagar från beslutet",
        "en": "Length of the permit in days from the decision",
    },
    "apply_permit_end": {
        "sv": "Godkänns ansökan i dag gäller tillståndet till och med {date}.",
        "en": "If the application is approved today, the permit ends on {date}.",
    },
    "apply_access_help": {"sv": "1–{max} dagar.", "en": "1-{max} days."},
    "apply_save": {"sv": "Spara utkast", "en": "Save draft"},
    "apply_submit": {"sv": "Skicka in ansökan", "en": "Submit the application"},
    "apply_submit_returned": {"sv": "Skicka in igen", "en": "Submit again"},
    "apply_mine": {"sv": "Ansökningar att slutföra", "en": "Applications to finish"},
    "apply_open": {"sv": "Ändra ansökan {id}", "en": "Edit application {id}"},
    "apply_saved": {
        "sv": "Utkastet till ansökan {id} är sparat.",
        "en": "The draft of application {id} is saved.",
    },
    "apply_submitted": {
        "sv": "Ansökan {id} är inskickad för granskning.",
        "en": "Application {id} is submitted for review.",
    },
    "apply_not_editable": {
        "sv": "Ansökan kan inte längre ändras här (status: {status}); en ändring av ett tillstånd görs som ett tillägg.",
        "en": "The application can no longer be edited here (status: {status}); a permit is changed by an amendment.",
    },
    "apply_unknown_action": {"sv": "Okänd åtgärd i formuläret.", "en": "Unknown action in the form."},
    # what each governance problem asks the applicant to fix; the governance message (English,
    # naming the values) follows it on the Swedish page
    "apply_problem.request.project": {
        "sv": "Projekttiteln ska ha 3–200 tecken.",
        "en": "The project title must have 3-200 characters.",
    },
    "apply_problem.request.purpose": {
        "sv": "Välj ett ändamål ur listan.",
        "en": "Choose a purpose from the list.",
    },
    "apply_problem.request.legal_basis": {
        "sv": "Välj en rättslig grund ur listan.",
        "en": "Choose a legal basis from the list.",
    },
    "apply_problem.request.ethics_ref": {
        "sv": "Diarienumret ska se ut som 2024-01234-01 (ÅÅÅÅ-NNNNN-NN), med ett rimligt år.",
        "en": "The reference must look like 2024-01234-01 (YYYY-NNNNN-NN), with a plausible year.",
    },
    "apply_problem.request.holders": {
        "sv": "Välj minst en känd dataägare.",
        "en": "Choose at least one known data holder.",
    },
    "apply_problem.request.holder_without_variables": {
        "sv": "Varje vald dataägare måste leverera minst en av de valda variablerna.",
        "en": "Every chosen data holder must deliver at least one of the chosen variables.",
    },
    "apply_problem.request.variables": {
        "sv": "Välj minst en variabel ur katalogen.",
        "en": "Choose at least one variable from the catalogue.",
    },
    "apply_problem.request.variable_not_held": {
        "sv": "Några valda variabler levereras inte av någon vald dataägare.",
        "en": "Some chosen variables are delivered by none of the chosen data holders.",
    },
    "apply_problem.request.unknown_user": {
        "sv": "En projektmedlem finns inte som användare.",
        "en": "A project member is not a user.",
    },
    "apply_problem.request.not_researcher": {
        "sv": "En projektmedlem har inte forskarrollen.",
        "en": "A project member does not have the researcher role.",
    },
    "apply_problem.request.cohort_criteria": {
        "sv": "Urvalskriterierna ska vara ett JSON-objekt: variabel -> villkor, med kända variabler och operatorer.",
        "en": "The cohort criteria must be a JSON object: variable -> condition, with known variables and operators.",
    },
    "apply_problem.request.period": {
        "sv": "Perioden ska vara två datum där början inte ligger efter slutet.",
        "en": "The period must be two dates, the start not after the end.",
    },
    "apply_problem.request.data_form": {"sv": "Välj en dataform.", "en": "Choose a data form."},
    "apply_problem.request.pseudonymisation_justification": {
        "sv": "Pseudonymiserade data kräver en motivering på minst 30 tecken.",
        "en": "Pseudonymised data needs a justification of at least 30 characters.",
    },
    "apply_problem.request.pseudonym_needs_justification": {
        "sv": "Länknycklar (pseudonymer) kräver pseudonymiserade data med motivering.",
        "en": "Linkage keys (pseudonyms) need pseudonymised data with a justification.",
    },
    "apply_problem.request.output_tier": {"sv": "Välj en utdatanivå.", "en": "Choose an output tier."},
    "apply_problem.request.record_needs_pseudonymised": {
        "sv": "Radnivå innebär pseudonymiserade data: välj pseudonymiserade och motivera, eller välj endast aggregat.",
        "en": "Record level means pseudonymised data: choose pseudonymised and justify it, or choose aggregates only.",
    },
    "apply_problem.request.access_days": {
        "sv": "Tillståndets längd ska vara ett heltal, 1–3650 dagar.",
        "en": "The permit's length must be a whole number, 1-3650 days.",
    },
    "apply_problem.forbidden_character": {
        "sv": "Texten innehåller ett otillåtet osynligt tecken eller styrtecken.",
        "en": "The text holds a forbidden invisible or control character.",
    },
    "apply_too_long": {
        "sv": "För lång text (högst {chars} tecken per fält) eller för många val (högst {names}).",
        "en": "Text too long (at most {chars} characters per field) or too many choices (at most {names}).",
    },
    # --- workspace (access/web/workspace.py)
    "nav_workspace": {"sv": "Arbetsyta", "en": "Workspace"},
    "workspace_title": {"sv": "Arbetsyta", "en": "Workspace"},
    "workspace_release_title": {"sv": "Arbetsyta: {release}", "en": "Workspace: {release}"},
    "workspace_intro": {
        "sv": "Här ställer du SQL-frågor mot dina uttag på radnivå, inne i den säkra miljön. Frågorna "
        "kontrolleras och loggas som i API:et. Resultat lämnar miljön bara genom utdatagranskning.",
        "en": "Here you query your record-level releases with SQL, inside the secure environment. Queries "
        "are checked and logged as in the API. Results leave the environment only through output checking.",
    },
    "workspace_none": {
        "sv": "Du har inget gällande tillstånd på radnivå med ett uttag.",
        "en": "You have no permit in force at record level with a release.",
    },
    "workspace_open": {"sv": "Öppna arbetsytan för {release}", "en": "Open the workspace for {release}"},
    "workspace_tables": {"sv": "Tabeller och kolumner", "en": "Tables and columns"},
    "workspace_codebook": {
        "sv": "Kodbok: etiketter, enheter, värdemängder",
        "en": "Codebook: labels, units, value sets",
    },
    "workspace_sql": {"sv": "SQL-fråga", "en": "SQL query"},
    "workspace_sql_help": {
        "sv": "En SELECT-fråga (DuckDB-dialekt) mot tabellerna till vänster.",
        "en": "One SELECT query (DuckDB dialect) over the tables listed beside it.",
    },
    "workspace_run": {"sv": "Kör frågan", "en": "Run the query"},
    "workspace_row_limit": {
        "sv": "Här visas högst {rows} rader. Ett större resultat lämnar miljön bara som utdata, efter granskning.",
        "en": "At most {rows} rows are shown here. A larger result leaves the environment only as an output, "
        "after checking.",
    },
    "workspace_result": {"sv": "Resultat", "en": "Result"},
    "workspace_result_rows": {
        "sv": "{rows} rader, {columns} kolumner",
        "en": "{rows} rows, {columns} columns",
    },
    "workspace_refused": {"sv": "Frågan avvisades: {message}", "en": "The query was refused: {message}"},
    "workspace_too_many_rows": {
        "sv": "Resultatet har fler än {rows} rader. Lägg till LIMIT {rows} för att se de första raderna här, "
        "eller begär utdata nedan för hela resultatet.",
        "en": "The result has more than {rows} rows. Add LIMIT {rows} to look at its first rows here, or "
        "request an output below for the whole result.",
    },
    "workspace_chart": {"sv": "Diagram", "en": "Chart"},
    "workspace_chart_title": {"sv": "{value} per {category}", "en": "{value} by {category}"},
    "workspace_chart_hint": {
        "sv": "Ett stapeldiagram ritas när resultatet har två kolumner: en kategori och ett tal.",
        "en": "A bar chart is drawn when the result has two columns: a category and a number.",
    },
    "workspace_chart_more": {
        "sv": "Diagrammet visar de första {bars} staplarna.",
        "en": "The chart shows the first {bars} bars.",
    },
    "workspace_output_title": {"sv": "Begär utdata", "en": "Request output"},
    "workspace_output_intro": {
        "sv": "Skicka frågans hela resultat till utdatagranskning. Två granskare beslutar; därefter kan du "
        "ladda ned filen under Mina utdata.",
        "en": "Send the query's whole result to output checking. Two checkers decide; then you download the "
        "file under My outputs.",
    },
    "workspace_output_submit": {"sv": "Begär utdata", "en": "Request output"},
    "workspace_null": {"sv": "(saknas)", "en": "(null)"},
    "workspace_record_only": {
        "sv": "Arbetsytan är för tillstånd på radnivå; aggregatfrågor ställs via API:et eller Python-klienten.",
        "en": "The workspace is for record-level permits; aggregate queries go through the API or the Python client.",
    },
    "workspace_unavailable": {
        "sv": "Tillstånden kunde inte hämtas just nu; försök igen.",
        "en": "Your permits could not be read just now; try again.",
    },
    # --- codebook of a release (access/web/codebook.py)
    "codebook_title": {"sv": "Kodbok: {release}", "en": "Codebook: {release}"},
    "codebook_link": {"sv": "Kodbok", "en": "Codebook"},
    "codebook_intro": {
        "sv": "Variablerna i uttaget med etikett, typ, enhet, värdemängd och kodsystem, och uttagets "
        "ursprung: dataansvariga, uttagsdatum, kvalitetskontroller, exkluderingar och röjandeskydd. "
        "Samma uppgifter som GET /releases/{release}/codebook och Client.describe().",
        "en": "The release's variables with label, type, unit, values and code system, and where the "
        "release comes from: data holders, extract dates, quality gates, exclusions and disclosure "
        "control. The same as GET /releases/{release}/codebook and Client.describe().",
    },
    "codebook_variables": {"sv": "Variabler", "en": "Variables"},
    "codebook_col_variable": {"sv": "Variabel", "en": "Variable"},
    "codebook_col_label": {"sv": "Beskrivning", "en": "Label"},
    "codebook_col_type": {"sv": "Typ", "en": "Type"},
    "codebook_col_unit": {"sv": "Enhet", "en": "Unit"},
    "codebook_col_values": {"sv": "Värden", "en": "Values"},
    "codebook_col_code_system": {"sv": "Kodsystem / värdeuppsättning", "en": "Code system / value set"},
    "codebook_col_class": {"sv": "Skyddsklass", "en": "Disclosure class"},
    "codebook_col_rule": {"sv": "Regel i uttaget", "en": "Release rule"},
    "codebook_col_complete": {"sv": "Ifylld", "en": "Complete"},
    "codebook_range": {"sv": "{low}–{high}", "en": "{low}–{high}"},
    "codebook_class_pseudonym": {"sv": "pseudonym", "en": "pseudonym"},
    "codebook_class_quasi_identifier": {"sv": "indirekt identifierande", "en": "quasi-identifier"},
    "codebook_class_health": {"sv": "hälsouppgift", "en": "health data"},
    "codebook_class_administrative": {"sv": "administrativ", "en": "administrative"},
    "codebook_class_unclassified": {"sv": "ej klassad", "en": "unclassified"},
    "codebook_rule_shift": {
        "sv": "datum förskjutet per person, högst ±{max_days} dagar",
        "en": "dates shifted per person, at most ±{max_days} days",
    },
    "codebook_rule_band5": {"sv": "femårsklass (nedre gräns)", "en": "five-year band (lower bound)"},
    "codebook_rule_year": {"sv": "endast år", "en": "year only"},
    "codebook_rule_month": {"sv": "endast månad", "en": "month only"},
    "codebook_rule_top_code": {
        "sv": "ovanliga värden (färre än {min_count} personer) som '{label}'",
        "en": "rare values (fewer than {min_count} persons) as '{label}'",
    },
    "codebook_rule_other": {"sv": "regel: {action}", "en": "rule: {action}"},
    "codebook_provenance": {"sv": "Ursprung", "en": "Provenance"},
    "codebook_built": {"sv": "Byggt", "en": "Built"},
    "codebook_request": {"sv": "Ansökan", "en": "Request"},
    "codebook_period": {"sv": "Period", "en": "Period"},
    "codebook_persons": {"sv": "Personer", "en": "Persons"},
    "codebook_rows": {"sv": "Rader per tabell", "en": "Rows per table"},
    "codebook_code_version": {"sv": "Kodversion", "en": "Code version"},
    "codebook_holders": {"sv": "Dataansvariga", "en": "Data holders"},
    "codebook_col_holder": {"sv": "Dataansvarig", "en": "Data holder"},
    "codebook_col_extract": {"sv": "Uttagsdatum", "en": "Extract date"},
    "codebook_col_gates": {
        "sv": "Kvalitetskontroller före uttaget",
        "en": "Quality gates before the release",
    },
    "codebook_unknown": {"sv": "ej registrerat här", "en": "not recorded here"},
    "codebook_gate": {
        "sv": "{zone}: {verdict} {date} ({checks} kontroller)",
        "en": "{zone}: {verdict} {date} ({checks} checks)",
    },
    "codebook_gate_passed": {"sv": "godkänd", "en": "passed"},
    "codebook_gate_failed": {"sv": "underkänd", "en": "failed"},
    "codebook_zone_raw": {"sv": "rådatazon", "en": "raw zone"},
    "codebook_zone_research": {"sv": "forskningszon", "en": "research zone"},
    "codebook_quality": {"sv": "Kvalitetsetikett (uttagets kontroll)", "en": "Quality label (release gate)"},
    "codebook_quality_summary": {
        "sv": "{verdict}: {passed} av {checks} kontroller godkända, {warned} varningar, {failed} underkända "
        "({skipped} ej tillämpliga).",
        "en": "{verdict}: {passed} of {checks} checks passed, {warned} warnings, {failed} failed "
        "({skipped} not applicable).",
    },
    "codebook_exclusions": {"sv": "Exkluderingar", "en": "Exclusions"},
    "codebook_col_reason": {"sv": "Skäl", "en": "Reason"},
    "codebook_col_count": {"sv": "Antal", "en": "Count"},
    "codebook_disclosure": {"sv": "Röjandeskydd", "en": "Disclosure control"},
    "codebook_tier": {"sv": "Utdatanivå", "en": "Output tier"},
    "codebook_tier_record": {"sv": "radnivå", "en": "record level"},
    "codebook_tier_aggregate": {"sv": "endast aggregat", "en": "aggregates only"},
    "codebook_k": {"sv": "k-anonymitet (per tabell)", "en": "k-anonymity (per table)"},
    "codebook_min_cell": {
        "sv": "Minsta cellstorlek (per dataansvarig)",
        "en": "Minimum cell count (per data holder)",
    },
}


def negotiate(query_lang: str | None, cookie_lang: str | None, accept_language: str | None) -> str:
    """The page language: explicit choice (query), then remembered choice (cookie), then the browser.

    >>> negotiate("en", "sv", None)
    'en'
    >>> negotiate(None, None, "en-GB,en;q=0.9,sv;q=0.5")
    'en'
    >>> negotiate("xx", None, "de")
    'sv'
    """
    for candidate in (query_lang, cookie_lang):
        if candidate in LANGUAGES:
            return candidate
    if accept_language:
        for part in accept_language.split(","):
            code = part.split(";")[0].strip().lower()[:2]
            if code in LANGUAGES:
                return code
    return DEFAULT_LANGUAGE


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **fields)`` in ``lang``; a missing key raises KeyError (caught by the tests)."""
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, not {lang!r}")

    def t(key: str, **fields: object) -> str:
        text = STRINGS[key][lang]
        return text.format(**fields) if fields else text

    return t
