"""``${NAME}`` in an Apprise URL: the .env value is encoded for the URL part it lands in (docs/operations.md).

What Apprise itself reads from the expanded URL is the check: the host mail goes to, the password
it logs in with, the token ntfy gets.
"""

from __future__ import annotations

import apprise
import pytest

from controller.errors import ConfigError
from controller.notifications.sender import expand

MAIL = "mailtos://${SMTP_USER}:${SMTP_PASSWORD}@smtp.example.com:587?to=ops@example.com&from=dreichor@example.com"


def _apprise(url: str) -> apprise.plugins.NotifyBase:
    target = apprise.Apprise.instantiate(url)
    assert target is not None, url
    return target


def test_a_password_with_an_at_sign_is_the_password_and_the_host_stays() -> None:
    url = expand(MAIL, {"SMTP_USER": "ops@example.com", "SMTP_PASSWORD": "Winter@2026"}, label="notify.urls[0]")
    target = _apprise(url)
    assert (target.host, target.user, target.password) == ("smtp.example.com", "ops@example.com", "Winter@2026")


@pytest.mark.parametrize("token", ["a/b-c#d", "x?y=1&z", "p%41ss", "sp ace:colon@at"])
def test_a_token_with_url_characters_reaches_ntfy_whole_and_the_host_stays(token: str) -> None:
    url = expand("ntfys://${NTFY_TOKEN}@ntfy.example.com/dreichor-prod", {"NTFY_TOKEN": token}, label="notify.urls[0]")
    target = _apprise(url)
    assert target.host == "ntfy.example.com" and target.user == token


def test_a_value_in_the_path_or_query_is_encoded_and_tokens_in_the_host_stay_as_written() -> None:
    assert expand("ntfys://ntfy.example/${TOPIC}?x=${Q}", {"TOPIC": "a#b", "Q": "1&2"}, label="u") == (
        "ntfys://ntfy.example/a%23b?x=1%262"
    )
    slack = expand("slack://${SLACK_WEBHOOK}/#deploys", {"SLACK_WEBHOOK": "T0001/B0002/XXXX"}, label="u")
    assert slack == "slack://T0001/B0002/XXXX/#deploys"
    assert expand("json://127.0.0.1:${PORT}/hook", {"PORT": "8080"}, label="u") == "json://127.0.0.1:8080/hook"
    assert expand("${WHOLE}", {"WHOLE": "ntfys://t@ntfy.example/x"}, label="u") == "ntfys://t@ntfy.example/x"


@pytest.mark.parametrize(
    ("template", "values", "words"),
    [
        ("json://${HOST}/hook", {"HOST": "evil.example@ntfy.example"}, "stands in the host part"),
        ("json://${HOST}/hook", {"HOST": "a.example?x"}, "stands in the host part"),
        ("${SCHEME}://ntfy.example/x", {"SCHEME": "json"}, "scheme and host would be"),
        ("ntfys://ntfy.example/${MISSING}", {}, "does not define"),
    ],
)
def test_a_url_whose_scheme_or_host_would_change_is_refused_at_load(
    template: str, values: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        expand(template, values, label="notify.urls[0]")
