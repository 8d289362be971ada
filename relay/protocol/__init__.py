"""The wire formats shared by the relay and the client (SPEC.md), with no I/O in them.

Import from the module that holds what you need; this package re-exports nothing:

* :mod:`relay.protocol.datagram`: the UDP voice datagram (24-byte header, one Opus packet);
* :mod:`relay.protocol.messages`: the TCP control stream (length-prefixed msgpack maps);
* :mod:`relay.protocol.schema`: the dataclass <-> msgpack map codec both of them and
  the client's bus events use, and the field constraints it checks;
* :mod:`relay.protocol.errors`: :class:`ProtocolError`, the one error family for bad input;
* :mod:`relay.protocol.widths`: the largest u16, u32 and u64, for both schemas.
"""
