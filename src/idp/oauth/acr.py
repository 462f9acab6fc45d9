"""Authentication context classes (ACR) and methods (AMR) the provider speaks.

ACR values are the REFEDS profiles; AMR values come from RFC 8176.
RFC 9470: a requested ACR is honoured or the request fails; unknown values are never
treated as the highest level.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Password and a TOTP code from an authenticator app (NIST 800-63B AAL2).
ACR_MFA = "https://refeds.org/profile/mfa"
#: Password only: possible only before MFA becomes mandatory, for people who skipped setup.
ACR_SFA = "https://refeds.org/profile/sfa"

#: Strength order, weakest first. Only these values are understood.
ACR_LEVELS: tuple[str, ...] = (ACR_SFA, ACR_MFA)

AMR_PASSWORD = "pwd"  # noqa: S105 (RFC 8176 section 2 method name, not a secret)
AMR_OTP = "otp"
AMR_MFA = "mfa"


def acr_for(amr: Iterable[str]) -> str:
    """The ACR earned by the given authentication methods."""
    methods = set(amr)
    return ACR_MFA if {AMR_PASSWORD, AMR_OTP} <= methods else ACR_SFA


def satisfies(achieved: str, requested: str) -> bool:
    """True when `achieved` is at least as strong as `requested`. Unknown values never
    satisfy and are never satisfied (RFC 9470 section 3)."""
    if achieved not in ACR_LEVELS or requested not in ACR_LEVELS:
        return False
    return ACR_LEVELS.index(achieved) >= ACR_LEVELS.index(requested)


def amr_with(amr: Iterable[str], method: str) -> list[str]:
    """`amr` plus `method`, with `mfa` added once both a password and a code are present."""
    methods = list(dict.fromkeys([*amr, method]))
    if AMR_PASSWORD in methods and AMR_OTP in methods and AMR_MFA not in methods:
        methods.append(AMR_MFA)
    return methods
