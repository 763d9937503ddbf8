"""Swedish and English text of the airlock's pages (output requests, checking, exceptions).

Merged into ``access.web.i18n.STRINGS``; the same test holds: every key has both languages.
"""

from __future__ import annotations

from collections.abc import Mapping

OUTPUT_STRINGS: Mapping[str, Mapping[str, str]] = {
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
}
