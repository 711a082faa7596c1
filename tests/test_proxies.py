"""The client's address behind our proxies: X-Forwarded-For is believed only from TRUSTED_PROXIES."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, override_settings

from config.proxies import client_address, parse_networks, request_client_address, scope_client_address

PROXIES = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("127.0.0.1", "203.0.113.9", ()) == "127.0.0.1"


def test_a_peer_that_is_not_our_proxy_cannot_name_another_client() -> None:
    assert client_address("198.51.100.7", "203.0.113.9", PROXIES) == "198.51.100.7"


def test_the_rightmost_address_that_is_not_ours_is_the_client() -> None:
    # The client forged the first hop; our two proxies appended what they saw.
    assert client_address("127.0.0.1", "1.2.3.4, 203.0.113.9, 10.1.2.3", PROXIES) == "203.0.113.9"


def test_ports_and_brackets_are_understood() -> None:
    assert client_address("::1", "[2001:db8::5]:4711", PROXIES) == "2001:db8::5"
    assert client_address("127.0.0.1", "203.0.113.9:5555", PROXIES) == "203.0.113.9"


def test_garbage_behind_our_proxy_falls_back_to_the_proxy() -> None:
    assert client_address("127.0.0.1", "not-an-address", PROXIES) == "127.0.0.1"


def test_a_request_from_inside_is_the_proxy_itself() -> None:
    assert client_address("127.0.0.1", "10.0.0.2", PROXIES) == "127.0.0.1"


def test_a_bad_setting_is_refused_with_its_text() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'10\.0\.0\.300'"):
        parse_networks(["10.0.0.300"])


@override_settings(TRUSTED_PROXIES=["127.0.0.1"])
def test_requests_and_scopes_use_the_setting() -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert request_client_address(request) == "203.0.113.9"
    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", b"203.0.113.9")]}
    assert scope_client_address(scope) == "203.0.113.9"
    assert scope_client_address({"client": ("198.51.100.7", 1), "headers": scope["headers"]}) == "198.51.100.7"
