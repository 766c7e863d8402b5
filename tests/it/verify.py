"""Independent verification of what the processor sent: JWTs with PyJWT, signatures with the
standardwebhooks package. Reads the cases from the JSON file given as the only argument and
exits non-zero on the first failure."""
import json
import sys

import jwt
import standardwebhooks

cases = json.load(open(sys.argv[1]))
for case in cases["jwt"]:
    with open(case["verify_key"], "rb") as f:
        key = f.read()
    claims = jwt.decode(
        case["token"],
        key,
        algorithms=[case["alg"]],
        audience=case["aud"],
        issuer=case["iss"],
        options={"require": ["exp", "iat", "jti", "sub", "iss", "aud"]},
    )
    assert claims["sub"] == case["sub"], claims
    assert claims["tenant"] == case["tenant"], claims
    assert claims["exp"] - claims["iat"] == case["lifetime"], claims
for case in cases["signatures"]:
    # Each secret of a rotation must verify on its own.
    for secret in case["secrets"]:
        standardwebhooks.Webhook(secret).verify(case["body"], case["headers"])
print(f"verified {len(cases['jwt'])} tokens and {len(cases['signatures'])} signed requests")
