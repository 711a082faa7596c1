from datetime import UTC, datetime
from decimal import Decimal

import msgpack
import pytest

from marketdata.events import PriceUpdate, decode_price_update, encode_price_update

T0 = datetime(2026, 1, 1, 12, 30, 15, 123000, tzinfo=UTC)


@pytest.mark.parametrize("reference", [Decimal("60123.45"), Decimal("0.00001234"), None])
def test_a_price_update_survives_the_wire_with_its_reference(reference: Decimal | None) -> None:
    update = PriceUpdate("BTC-USD", 7, "e1", Decimal("61000.5"), Decimal("61000"), Decimal("61001"), T0, "test", 0, reference)

    message = encode_price_update(update)
    # The channel layer ships messages as msgpack: strings, ints and None only.
    decoded = decode_price_update(msgpack.unpackb(msgpack.packb(message)))

    assert message["ref"] == (None if reference is None else str(reference))
    assert decoded == update


def test_a_message_from_an_older_worker_without_ref_decodes_with_no_reference() -> None:
    message = encode_price_update(PriceUpdate("AAPL", 1, "e1", Decimal("100"), None, None, T0, "test", 0))
    del message["ref"]
    assert decode_price_update(message).reference is None
