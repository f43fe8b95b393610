"""What the admin page hides until a reveal: every form a payload writes the buyer in."""

from __future__ import annotations

from relay.admin.masking import MASK, hidden_values, mask_text
from relay.hotmart import Buyer
from relay.whatsapp import whatsapp_number, whatsapp_url


def test_the_whatsapp_link_of_the_buyer_is_masked_too() -> None:
    """Sale recovery's link carries the phone in international form (country code joined),
    which neither the phone as sent nor its bare digits match as a whole word."""
    buyer = Buyer(name="João Silva", email="joao@example.com", phone="31999991234")
    number = whatsapp_number(buyer.phone, "BR")
    assert number is not None and number != "31999991234"
    body = f'{{"buyer": {{"whatsapp_url": "{whatsapp_url(number, "Olá")}"}}}}'

    masked = mask_text(body, hidden_values(buyer, "BR"))

    assert "999991234" not in masked
    assert f"wa.me/{MASK}" in masked
