"""Node administration (`adsched nodes drain|resume`, like `scontrol update nodename=... state=...`).

A drained node takes no new rank: the store puts every node not `up` in Snapshot.unavailable,
which the core never places on; jobs already running there run to their end. Admins only
(auth.require_admin); each change is a `node_state` event naming who made it and why.
"""

from __future__ import annotations

from adsched.core.hostlist import HostlistError, expand
from adsched.errors import InvalidRequest

from .auth import Identity, require_admin
from .store import Store


def node_names(store: Store, expressions: tuple[str, ...]) -> list[str]:
    """node01 node[02-04] -> the names, each checked against the cluster (all, before any change)."""
    known = {n.name for n in store.config.nodes}
    names: list[str] = []
    for expr in expressions:
        try:
            names += expand(expr)
        except HostlistError as e:
            raise InvalidRequest(f"{expr}: {e}") from None
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidRequest(f"no node {', '.join(unknown)} in cluster {store.config.name}")
    return list(dict.fromkeys(names))


def set_state(store: Store, expressions: tuple[str, ...], state: str, reason: str, who: Identity | None,
              now: float) -> list[str]:
    """Drain (`drain`) or resume (`up`) nodes in one transaction; returns their names."""
    if state == "drain" and not reason.strip():
        raise InvalidRequest("drain needs --reason (it is shown beside the node and kept in its events)")
    names = node_names(store, expressions)
    require_admin(store, who, "drain" if state == "drain" else "resume", now)
    with store.transaction():
        for name in names:
            store.conn.execute("INSERT OR REPLACE INTO nodes(name, state, reason) VALUES (?,?,?)",
                               (name, state, reason if state != "up" else ""))
            store._event(None, "node_state", {"node": name, "state": state, "reason": reason,
                                               "by": who.name if who else "adsched"}, now)
    return names
