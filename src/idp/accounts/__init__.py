"""The identity domain, free of HTTP: emails, passwords, TOTP, sessions, throttling, audit."""
