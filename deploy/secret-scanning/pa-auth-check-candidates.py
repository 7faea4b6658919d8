#!/usr/bin/env python3
"""Keep only the candidate pa-auth tokens whose checksum is right.

Reads text on stdin (a scanner's report, a log, a paste), finds every pa_ + 46 base62
candidate and prints, one a line, those whose last 6 characters are the CRC-32 (zlib's crc32)
of the 40 random characters in base62, most significant digit first. A regex match with a
wrong checksum is never a pa-auth token: drop it without a look-up. What remains is
well-formed; whether pa-auth issued it, only pa-auth can say (POST /admin/api/tokens/lookup,
or revoke them: POST /admin/api/tokens/revoke, `pa-auth token revoke`). Nothing leaves this
machine.

  gitleaks detect --report-format json --report-path - | pa-auth-check-candidates.py
"""
import re
import sys
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CANDIDATE = re.compile(r"\bpa_[0-9A-Za-z]{46}\b")


def checksum(random_part: str) -> str:
    value = zlib.crc32(random_part.encode("ascii"))
    digits = []
    for _ in range(6):
        digits.append(BASE62[value % 62])
        value //= 62
    return "".join(reversed(digits))


def is_pa_auth_token(candidate: str) -> bool:
    return (
        len(candidate) == 49
        and candidate.startswith("pa_")
        and checksum(candidate[3:43]) == candidate[43:]
    )


def main() -> int:
    seen = set()
    for match in CANDIDATE.finditer(sys.stdin.read()):
        token = match.group(0)
        if token not in seen and is_pa_auth_token(token):
            seen.add(token)
            print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
