"""The firewall between actors and the host: one nftables table per backend instance.

Actors reach nothing but the replies to connections the host opened to them:

* input from an actor's veth: only packets of connections the host started (the
  router's and the readiness probe's); everything else (an actor connecting to a
  host service listening on 0.0.0.0, the host end's address, ...) is dropped;
* nothing is forwarded to or from an actor's veth (no actor reaches another actor,
  or anything beyond the host);
* output to an actor's veth: only TCP to the actor port.

The table is ``inet actormux_<instance>`` and matches the instance's host-side veths
by name (``amx<instance>h*``), so it covers workers added later and never touches
other rules. It is replaced atomically (``nft -f``) and removed by name.
"""

from __future__ import annotations

from backends.gvisor.names import VETH_PREFIX
from backends.gvisor.proc import CommandError, run_sync

TABLE_PREFIX = "actormux_"


def table_name(instance: int) -> str:
    """The nftables table of backend ``instance``."""
    return f"{TABLE_PREFIX}{instance}"


def ruleset(instance: int, actor_port: int) -> str:
    """The nftables script that (re)creates ``instance``'s table."""
    table = table_name(instance)
    veths = f'"{VETH_PREFIX}{instance}h*"'
    return f"""table inet {table}
delete table inet {table}
table inet {table} {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname {veths} ct state established,related accept
        iifname {veths} counter drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname {veths} counter drop
        oifname {veths} counter drop
    }}
    chain output {{
        type filter hook output priority filter; policy accept;
        oifname {veths} tcp dport {actor_port} accept
        oifname {veths} ct state established,related accept
        oifname {veths} counter drop
    }}
}}
"""


def install(instance: int, actor_port: int) -> None:
    """Create (or replace) ``instance``'s table."""
    proc = run_sync(["nft", "-f", "-"], check=False, stdin=ruleset(instance, actor_port))
    if proc.returncode != 0:
        raise CommandError(["nft", "-f", "-"], proc.returncode, proc.stderr)


def remove(instance: int | None = None) -> list[str]:
    """Delete ``instance``'s table (or every actormux table); return their names."""
    removed = tables(instance)
    for table in removed:
        run_sync(["nft", "delete", "table", "inet", table], check=False)
    return removed


def tables(instance: int | None = None) -> list[str]:
    """Names of actormux's nftables tables (of one instance, or all)."""
    try:
        out = run_sync(["nft", "list", "tables", "inet"], check=False).stdout
    except FileNotFoundError:
        return []
    names = [line.split()[-1] for line in out.splitlines() if line.startswith("table inet ")]
    if instance is not None:
        return [n for n in names if n == table_name(instance)]
    return sorted(n for n in names if n.startswith(TABLE_PREFIX))
