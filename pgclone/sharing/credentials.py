"""Tables that hold credentials: a scrubbed dump copies them empty.

A row of these lets whoever holds it act as a user on production: a session
key is a signed-in browser, a token an API client. Each is known by its
Django model label (when its app is installed) and by its table's name (for
a project that made the table itself, or renamed nothing): either finds it.
A config keeps one only by naming its table in ``tables``; those whose
primary key is the secret itself can't be kept at all (keys are copied as
they are, never scrubbed).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps


@dataclass(frozen=True)
class Known:
    label: str  # the model's label
    table: str  # its table's default name
    what: str
    secret_key: bool = False  # its primary key is the secret: it can't be kept


KNOWN = (
    Known("sessions.Session", "django_session", "Django's sessions", secret_key=True),
    Known("authtoken.Token", "authtoken_token", "Django REST framework's tokens", True),
    Known("oauth2_provider.AccessToken", "oauth2_provider_accesstoken", "OAuth access tokens"),
    Known("oauth2_provider.RefreshToken", "oauth2_provider_refreshtoken", "OAuth refresh tokens"),
    Known("oauth2_provider.Grant", "oauth2_provider_grant", "OAuth grants"),
    Known("oauth2_provider.IDToken", "oauth2_provider_idtoken", "OpenID Connect ID tokens"),
    Known("knox.AuthToken", "knox_authtoken", "django-rest-knox's tokens"),
    Known("socialaccount.SocialToken", "socialaccount_socialtoken", "allauth's social tokens"),
    Known("account.EmailConfirmation", "account_emailconfirmation", "allauth's email keys"),
    Known("mfa.Authenticator", "mfa_authenticator", "allauth's TOTP secrets, recovery codes"),
    Known("usersessions.UserSession", "usersessions_usersession", "allauth's user sessions"),
    Known("user_sessions.Session", "user_sessions_session", "django-user-sessions", True),
    Known(
        "token_blacklist.OutstandingToken",
        "token_blacklist_outstandingtoken",
        "Simple JWT's refresh tokens",
    ),
    Known(
        "token_blacklist.BlacklistedToken",
        "token_blacklist_blacklistedtoken",
        "Simple JWT's blacklist",
    ),
    Known("otp_totp.TOTPDevice", "otp_totp_totpdevice", "django-otp's TOTP secrets"),
    Known("otp_hotp.HOTPDevice", "otp_hotp_hotpdevice", "django-otp's HOTP secrets"),
    Known("otp_static.StaticToken", "otp_static_statictoken", "django-otp's backup codes"),
)


def table_names() -> dict[str, Known]:
    """{table name: what it holds}: each known table under its default name and,
    when its app is installed, under its model's ``db_table``."""
    found = {known.table: known for known in KNOWN}
    for known in KNOWN:
        try:
            model = apps.get_model(known.label)
        except LookupError:
            continue
        found[model._meta.db_table] = known
    return found
