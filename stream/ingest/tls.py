"""TLS of the ingest listeners (MLLP over TLS and HTTPS) from ``ingest_tls_certfile`` / ``ingest_tls_keyfile``.

>>> from notestream.core.settings import Settings
>>> server_ssl_context(Settings()) is None
True
"""

from __future__ import annotations

import ssl

from notestream.core.errors import ConfigError
from notestream.core.settings import Settings


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The listeners' TLS context (TLS 1.2 or later), or None when no certificate is set."""
    cert, key = settings.ingest_tls_certfile, settings.ingest_tls_keyfile
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("Set both ingest_tls_certfile and ingest_tls_keyfile (or neither, for plain TCP).")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"Cannot load the ingest TLS certificate {cert} and key {key} ({type(exc).__name__}); check that "
            "both are PEM and belong together."
        ) from exc
    return context
