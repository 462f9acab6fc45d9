"""OpenID Connect identity provider for the PharmOutcomes family of services."""

__version__ = "0.1.0"
