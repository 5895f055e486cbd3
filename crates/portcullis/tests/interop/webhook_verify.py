"""Verifies webhook deliveries with the PyPI `svix` and `standardwebhooks` libraries,
as a receiver would: reads {"secrets": [...], "deliveries": [{headers, body}]} on
stdin and prints, per delivery, which secrets each library accepted it under."""
import json
import sys

from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook


def accepted(make, secret, body, headers):
    try:
        make(secret).verify(body, headers)
        return True
    except Exception:  # noqa: BLE001 - any refusal means "not verified"
        return False


def main():
    data = json.load(sys.stdin)
    out = []
    for d in data["deliveries"]:
        h, body = d["headers"], d["body"]
        std = {k: h[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        svix = {k: h[k] for k in ("svix-id", "svix-timestamp", "svix-signature")}
        out.append({
            "standardwebhooks": [i for i, s in enumerate(data["secrets"]) if accepted(StandardWebhook, s, body, std)],
            "svix": [i for i, s in enumerate(data["secrets"]) if accepted(SvixWebhook, s, body, svix)],
        })
    print(json.dumps(out))


main()
