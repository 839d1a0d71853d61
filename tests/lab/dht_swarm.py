"""A private Mainline DHT: N libtorrent sessions in one process (run inside a lab namespace).

Usage: python dht_swarm.py IP[,IP...] PORT

Each session listens on its own address (one /32 each, in different /24s, so libtorrent's
defaults count them as different nodes), DHT only, bootstrapped to each other
(FACTS.md "A private Mainline DHT"). Prints `{"ready": N}` once every session has other
nodes in its routing table, then answers JSON lines on stdin:

- `{"cmd": "put", "private": HEX, "public": HEX, "value": HEX, "salt": HEX}` →
  `{"put": num_success}`: store a mutable item, as anyone holding the key could (crafted
  records in the tests);
- `{"cmd": "get", "public": HEX, "salt": HEX}` → `{"get": HEX or null, "seq": N}`.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import Any

import libtorrent as lt

#: Seconds a put or get may take (libtorrent's request timeout is 15 s).
WAIT_S = 25.0


def session(ip: str, port: int) -> Any:
    return lt.session(
        {
            "listen_interfaces": f"{ip}:{port}",
            "enable_dht": True,
            "dht_bootstrap_nodes": "",
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_incoming_tcp": False,
            "enable_outgoing_tcp": False,
            "enable_incoming_utp": False,
            "enable_outgoing_utp": False,
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            # A lab node that quit (or moved) is forgotten after 2 unanswered requests, not 20:
            # handed out to others it makes every traversal wait libtorrent's 15 s timeout.
            "dht_max_fail_count": 2,
            "alert_mask": lt.alert.category_t.dht_notification,
        }
    )


def wait_alert(ses: Any, kind: type, within: float) -> Any:
    end = time.monotonic() + within
    while time.monotonic() < end:
        ses.wait_for_alert(100)
        for alert in ses.pop_alerts():
            if isinstance(alert, kind):
                return alert
    return None


def main() -> None:
    warnings.simplefilter("ignore", DeprecationWarning)  # status(): no other node count
    ips = sys.argv[1].split(",")
    port = int(sys.argv[2])
    sessions = [session(ip, port) for ip in ips]
    for i, ses in enumerate(sessions):
        for j, ip in enumerate(ips):
            if j != i:
                ses.add_dht_node((ip, port))
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if all(s.status().dht_nodes >= min(8, len(ips) - 1) for s in sessions):
            break
        time.sleep(0.05)  # libtorrent has no alert for "routing table filled"
    for ses in sessions:
        ses.pop_alerts()
    print(json.dumps({"ready": len(sessions)}), flush=True)
    first = sessions[0]
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "put":
            first.pop_alerts()
            first.dht_put_mutable_item(
                bytes.fromhex(cmd["private"]),
                bytes.fromhex(cmd["public"]),
                bytes.fromhex(cmd["value"]),
                bytes.fromhex(cmd["salt"]),
            )
            alert = wait_alert(first, lt.dht_put_alert, WAIT_S)
            print(json.dumps({"put": alert.num_success if alert else -1}), flush=True)
        elif cmd["cmd"] == "get":
            first.pop_alerts()
            first.dht_get_mutable_item(bytes.fromhex(cmd["public"]), bytes.fromhex(cmd["salt"]))
            value, seq = b"", 0
            while True:
                # Early answers come first; the last, authoritative one once the lookup ends
                # (up to 15 s later when a node on the way does not answer).
                alert = wait_alert(first, lt.dht_mutable_item_alert, WAIT_S)
                if alert is not None and alert.item and alert.seq >= seq:
                    value, seq = bytes(alert.item), int(alert.seq)
                if alert is None or alert.authoritative:
                    break
            answer = {"get": value.hex() or None, "seq": seq}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
