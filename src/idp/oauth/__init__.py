"""The OAuth 2.0 / OpenID Connect protocol, built on Authlib."""
