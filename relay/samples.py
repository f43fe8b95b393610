"""Made-up slip events for `relay send-test`: realistic shape, obviously fake people.

Shaped like what `relay.hotmart` makes of a real body (SPEC §2), so that a test shows
the affiliate exactly what a real slip will: a 47-digit boleto, no invented expiry.
"""

from __future__ import annotations

import secrets
from decimal import Decimal

from relay.hotmart import SLIP_EVENT, Affiliate, Buyer, Event, Payment, Product, Purchase

_BY_LOCALE = {
    "pt": (
        Payment(
            type="BILLET",
            method="Boleto",
            slip_url="https://example.com/relay-test/boleto",
            slip_code="34191090000000000000000000000000000000000000000",
        ),
        Purchase(
            transaction="TEST-BOLETO", price=Decimal("97.00"), currency="BRL", country_iso="BR"
        ),
        # As real bodies give it once parsed: the area code (DDD) joined to the number.
        Buyer(name="Comprador de Teste", email="comprador.teste@example.com", phone="11900000000"),
    ),
    "es": (
        Payment(
            type="CASH_PAYMENT",
            method="OXXO",
            slip_url="https://example.com/relay-test/oxxo",
            slip_code="93000000000000000000000000000000",
        ),
        Purchase(
            transaction="TEST-OXXO", price=Decimal("499.00"), currency="MXN", country_iso="MX"
        ),
        Buyer(
            name="Comprador de Prueba",
            email="comprador.prueba@example.com",
            phone="+52 55 0000 0000",
        ),
    ),
}


def sample_slip_event(affiliate_code: str, affiliate_name: str, locale: str, now_ms: int) -> Event:
    payment, purchase, buyer = _BY_LOCALE.get(locale, _BY_LOCALE["es"])
    return Event(
        id=f"test:{secrets.token_hex(8)}",
        event=SLIP_EVENT,
        version="2.0.0",
        source="send-test",
        created_at_ms=now_ms,
        product=Product(id="test", name="relay test product"),
        affiliates=(Affiliate(code=affiliate_code, name=affiliate_name),),
        buyer=buyer,
        purchase=purchase.model_copy(update={"status": "BILLET_PRINTED", "order_date_ms": now_ms}),
        # No expiry: real boleto and OXXO slips carry none (only Pix codes do), and a
        # test should not show the affiliate something a real slip never will.
        payment=payment,
    )
