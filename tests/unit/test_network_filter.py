"""The isolated network's filter blocks every private and special range in one set; the network
tests reach one member of it (a special-purpose range), so these are the others, checked as data."""

from __future__ import annotations

import ipaddress

import pytest

from jupyter_worker.sandbox.network import BLOCKED


@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "192.0.0.200"],
)
def test_private_loopback_link_local_and_special_addresses_are_in_the_blocked_set(address):
    assert any(ipaddress.ip_address(address) in ipaddress.ip_network(cidr) for cidr in BLOCKED)


@pytest.mark.parametrize("address", ["203.0.113.2", "198.51.100.7", "1.1.1.1"])
def test_public_and_documentation_addresses_are_not_blocked(address):
    assert not any(ipaddress.ip_address(address) in ipaddress.ip_network(cidr) for cidr in BLOCKED)
