#!/usr/bin/env python3
"""pylibsrtp as an independent SRTP peer for srtp/tests/srtp_interop_with_pylibsrtp.rs.

Reads one JSON job on stdin and runs every packet through one pylibsrtp (libsrtp) session, in
order, so the session keeps its per-SSRC state (rollover counter, replay window, SRTCP index):

    {"profile": "AES_CM_128_HMAC_SHA1_80", "key_b64": "<master key || salt>",
     "mode": "unprotect_rtp" | "protect_rtp" | "unprotect_rtcp" | "protect_rtcp",
     "packets_hex": ["80...", ...]}

and writes one JSON object on stdout, one result per packet:

    {"results": [{"ok": true, "hex": "..."} | {"ok": false, "error": "authentication failure"}]}

`--list-profiles` prints {"profiles": [...]}: the SDES names of the profiles this pylibsrtp
exposes. Errors about the job itself (bad JSON, unknown profile or mode) exit with status 2.
"""

import base64
import json
import sys

import pylibsrtp

# SDES suite name (RFC 4568, RFC 6188, RFC 7714) -> the pylibsrtp.Policy attribute naming it.
PROFILE_ATTRIBUTES = {
    "AES_CM_128_HMAC_SHA1_80": "SRTP_PROFILE_AES128_CM_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32": "SRTP_PROFILE_AES128_CM_SHA1_32",
    "AES_256_CM_HMAC_SHA1_80": "SRTP_PROFILE_AES256_CM_SHA1_80",
    "AES_256_CM_HMAC_SHA1_32": "SRTP_PROFILE_AES256_CM_SHA1_32",
    "AEAD_AES_128_GCM": "SRTP_PROFILE_AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM": "SRTP_PROFILE_AEAD_AES_256_GCM",
}


def supported_profiles():
    """SDES name -> pylibsrtp profile constant, for the profiles this pylibsrtp has."""
    return {
        name: getattr(pylibsrtp.Policy, attribute)
        for name, attribute in PROFILE_ATTRIBUTES.items()
        if hasattr(pylibsrtp.Policy, attribute)
    }


def fail(message):
    print(f"pylibsrtp_peer: {message}", file=sys.stderr)
    sys.exit(2)


def run(job):
    profiles = supported_profiles()
    profile = profiles.get(job.get("profile"))
    if profile is None:
        fail(f"profile {job.get('profile')!r} is not one of {sorted(profiles)}")
    mode = job.get("mode")
    if mode not in ("protect_rtp", "unprotect_rtp", "protect_rtcp", "unprotect_rtcp"):
        fail(f"unknown mode {mode!r}")
    key = base64.b64decode(job["key_b64"], validate=True)

    outbound = mode.startswith("protect")
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=(
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
        ),
        srtp_profile=profile,
    )
    session = pylibsrtp.Session(policy=policy)
    transform = {
        "protect_rtp": session.protect,
        "unprotect_rtp": session.unprotect,
        "protect_rtcp": session.protect_rtcp,
        "unprotect_rtcp": session.unprotect_rtcp,
    }[mode]

    results = []
    for packet_hex in job["packets_hex"]:
        try:
            out = transform(bytes.fromhex(packet_hex))
            results.append({"ok": True, "hex": bytes(out).hex()})
        except (pylibsrtp.Error, ValueError) as error:
            # pylibsrtp.Error carries libsrtp's status text ("authentication failure",
            # "replay check failed (bad index)", ...); ValueError: "packet is too long".
            results.append({"ok": False, "error": str(error)})
    return {"results": results}


def main():
    if sys.argv[1:] == ["--list-profiles"]:
        json.dump({"profiles": sorted(supported_profiles())}, sys.stdout)
        return
    if sys.argv[1:]:
        fail("usage: pylibsrtp_peer.py [--list-profiles] < job.json")
    try:
        job = json.load(sys.stdin)
    except json.JSONDecodeError as error:
        fail(f"the job is not JSON: {error}")
    json.dump(run(job), sys.stdout)


if __name__ == "__main__":
    main()
