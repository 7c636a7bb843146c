// The XDP program's own counters, in the order of their slots after the core's routing
// outcomes, drop reasons and events. Read by build.rs (which numbers them for the C
// program) and by the crate (which declares them as `StatInfo`s): one list for both.
// (name, help); every one is a counter.
&[
    ("passed_other", "Frames not for the listener (other protocols, addresses or ports), passed to the stack."),
    ("passed_fragments", "IPv4 fragments for the listener's address, passed to the stack (only the first carries the UDP header)."),
    ("passed_ipv6_extensions", "IPv6 packets for the listener's address with extension headers, passed to the stack."),
    ("passed_bad_udp", "UDP headers for the listener whose length does not fit the packet, passed to the stack."),
    ("passed_too_many_records", "Datagrams with more DTLS records than the program walks (16), passed to the stack."),
    ("punted_encrypted_cids", "Datagrams whose encrypted QUIC-LB CID had no cached decoding: queued with their frame for the slow path, which decodes the CID and forwards the datagram."),
    ("punt_queue_full", "Punted datagrams that found the slow path's queue full: passed to the stack (lost where the listener's address is not local)."),
    ("punt_frame_too_long", "Punted datagrams whose frame is longer than a queue record holds (1536 bytes): the CID is queued, the datagram passed to the stack."),
]
