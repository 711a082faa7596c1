import pytest
from django.core.exceptions import ValidationError

from marketdata.models import AssetClass, Instrument


def aapl(**fields: str) -> Instrument:
    return Instrument(**{"symbol": "AAPL", "name": "Apple", "asset_class": AssetClass.EQUITY, "quote_currency": "USD", **fields})


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo"])
def test_an_iana_time_zone_is_accepted(zone: str) -> None:
    aapl(exchange_timezone=zone).full_clean(validate_unique=False)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "EST5EDT6", "../etc/passwd", ""])
def test_anything_else_is_refused_by_name(zone: str) -> None:
    with pytest.raises(ValidationError) as error:
        aapl(exchange_timezone=zone).full_clean(validate_unique=False)
    assert "exchange_timezone" in error.value.message_dict


def test_the_trading_day_defaults_to_utc() -> None:
    assert aapl().exchange_timezone == "UTC"


@pytest.mark.parametrize(("asset_class", "always_open"), [(c, c in {AssetClass.CRYPTO, AssetClass.FX}) for c in AssetClass])
def test_only_crypto_and_fx_are_always_open(asset_class: str, always_open: bool) -> None:
    assert aapl(asset_class=asset_class).always_open is always_open
