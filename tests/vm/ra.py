#!/usr/bin/env python3
"""Sends one IPv6 router advertisement to all nodes on an interface (run in the test's
management namespace): a default router and the autonomous prefix 2001:db8:99::/64.

  ra.py IFNAME
"""

import socket
import struct
import sys


def main():
    ifname = sys.argv[1]
    index = socket.if_nametoindex(ifname)
    prefix = socket.inet_pton(socket.AF_INET6, "2001:db8:99::")
    # Type 134, code 0, checksum (the kernel fills it in), hop limit 64, no M/O flags,
    # router lifetime 1800 s, reachable time and retransmit timer unspecified.
    header = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    # Prefix information: /64, on-link and autonomous, valid 1 day, preferred 4 hours.
    pio = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + prefix
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    # Receivers drop neighbour discovery that has crossed a router: hop limit 255.
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    s.sendto(header + pio, ("ff02::1", 0, 0, index))


if __name__ == "__main__":
    main()
