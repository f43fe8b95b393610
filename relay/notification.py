"""One message to one affiliate, and the variables its templates see.

`relay.render` renders it; `relay.attempt` builds it from a claimed delivery and the
config in force. Pure: the event's values are already bounded, and the formatting
helpers make them readable in the affiliate's language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.formatting import (
    event_title,
    format_amount,
    format_code,
    format_expiry,
    format_phone,
    http_url,
)
from relay.hotmart import Event
from relay.hotmart_payment import NEUTRAL_METHODS
from relay.outbox import notice_of
from relay.records import Notice


@dataclass(frozen=True)
class Notification:
    """One message for one affiliate: the event plus who receives it and how it reads."""

    event: Event
    affiliate_code: str
    affiliate_name: str  # from config if set, else the event's affiliate name
    producer_name: str
    locale: str  # "es" | "pt" | "en"
    is_test: bool  # relay send-test or Hotmart's test button: marked in subject, body, JSON
    message_id: str  # stable id of the delivery ("msg_...")
    # What it says; None: what its event says (the slip, or the event in general words).
    notification: Notice | None = None
    # Sale recovery: a WhatsApp link to the buyer, when their phone can be told.
    whatsapp: bool = False
    # Sale recovery: when the slip expires as recovery reckons it (shown in a reminder).
    expires_at_ms: int | None = None

    @property
    def notice(self) -> Notice:
        return self.notification or notice_of(self.event.event)


def notification_context(n: Notification) -> dict[str, Any]:
    """The variables a notification's templates see (templates/README.md lists them);
    `whatsapp_url` is filled in by `Templates`, which renders its message."""
    event = n.event
    payment = event.payment
    country = event.purchase.buyer_country
    expires_at_ms = payment.expires_at_ms if n.expires_at_ms is None else n.expires_at_ms
    return {
        "event": event,
        "product": event.product,
        "purchase": event.purchase,
        "payment": payment,
        "buyer": event.buyer,
        "affiliate_code": n.affiliate_code,
        "affiliate_name": n.affiliate_name,
        "producer_name": n.producer_name,
        "locale": n.locale,
        "is_test": n.is_test,
        "message_id": n.message_id,
        "notification": n.notice.value,
        "whatsapp_url": None,  # see Templates._context
        "buyer_first_name": event.buyer.name.split()[0] if event.buyer and event.buyer.name else "",
        # The brand (Boleto, OXXO...); empty for a neutral name, which templates word
        # in their own language ("Ficha de pago", "Guia de pagamento").
        "method": "" if payment.method in NEUTRAL_METHODS else payment.method or "",
        "event_title": event_title(event.event, n.locale),
        "amount": format_amount(event.purchase.price, event.purchase.currency, n.locale),
        "formatted_code": format_code(payment.slip_code, payment.method),
        "expires_at": format_expiry(expires_at_ms, country, n.locale),
        "buyer_phone": format_phone(event.buyer.phone, country) if event.buyer else "",
        "slip_link": http_url(payment.slip_url),
        "qr_link": http_url(payment.pix_qrcode),
    }
