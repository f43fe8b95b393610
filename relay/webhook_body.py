"""The default webhook body, built in Python: the same JSON `templates/webhook.json` renders.

Rendering the default `webhook.json` through Jinja cost about 1.7 million instructions a
body; building the same object here and writing it with orjson costs a small fraction
of that (README, "Performance"). `relay.render.Templates` uses this only while the
producer has not overridden `webhook.json`: an override is rendered by Jinja as before.
tests/test_webhook_body.py holds the two to the same meaning on every fixture.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from relay.formatting import iso_utc, json_dumps
from relay.notification import Notification


def default_webhook_body(n: Notification, whatsapp_url: str | None) -> bytes:
    """What templates/webhook.json renders for `n`, as compact UTF-8 JSON."""
    event = n.event
    product, purchase, payment, buyer = event.product, event.purchase, event.payment, event.buyer
    body = {
        "event": event.event,
        "event_id": event.id,
        "occurred_at": iso_utc(event.created_at_ms),
        "test": n.is_test,
        "notification": n.notice.value,
        "affiliate": {"code": n.affiliate_code, "name": n.affiliate_name or None},
        "product": {
            "id": product.id or None,
            "ucode": product.ucode or None,
            "name": product.name or None,
        },
        "purchase": {
            "transaction": purchase.transaction or None,
            "status": purchase.status or None,
            "price": {"value": _price(purchase.price), "currency": purchase.currency or None},
            "country": purchase.country_iso or None,
        },
        "payment": {
            "type": payment.type or None,
            "method": payment.method,
            "slip_url": payment.slip_url,
            "slip_code": payment.slip_code,
            "pix_code": payment.pix_code,
            "pix_qrcode": payment.pix_qrcode,
            "expires_at": iso_utc(payment.expires_at_ms),
        },
        "buyer": {
            "name": (buyer.name or None) if buyer else None,
            "email": (buyer.email or None) if buyer else None,
            "phone": (buyer.phone or None) if buyer else None,
            "whatsapp_url": whatsapp_url,
        },
    }
    return orjson.dumps(body)


def _price(price: Decimal | None) -> orjson.Fragment | None:
    # The template's `tojson` writes a Decimal as its exact text (`499.00`), never a float.
    return None if price is None else orjson.Fragment(json_dumps(price))
