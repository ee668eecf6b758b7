/*
 * bench-relay.c — the floor of a userspace L2 tunnel, for scripts/bench.sh.
 *
 *   bench-relay TAP LOCAL_PORT PEER_IP PEER_PORT
 *
 * Opens TAP (a plain TAP: no vnet header, no offloads, no encryption, no framing) and a UDP socket
 * connected to the peer, then forwards in one thread: each Ethernet frame read from the TAP leaves
 * as one datagram, each datagram received is written to the TAP. It does the least any userspace
 * TAP tunnel must do per packet (one wake-up, one read, one write on each side), so its RTT is the
 * lowest a userspace design reaches on this machine and kernel; meshd's is compared with it.
 * Not part of meshd; it never runs outside the benchmark's namespaces.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 5) {
		fprintf(stderr, "usage: bench-relay TAP LOCAL_PORT PEER_IP PEER_PORT\n");
		return 2;
	}
	int tap = open("/dev/net/tun", O_RDWR);
	if (tap < 0) {
		perror("bench-relay: /dev/net/tun");
		return 1;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
	if (ioctl(tap, TUNSETIFF, &ifr) < 0) {
		perror("bench-relay: TUNSETIFF");
		return 1;
	}
	int udp = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
	if (udp < 0 || inet_pton(AF_INET, argv[3], &peer.sin_addr) != 1 ||
	    bind(udp, (struct sockaddr *)&local, sizeof local) < 0 ||
	    connect(udp, (struct sockaddr *)&peer, sizeof peer) < 0) {
		perror("bench-relay: UDP socket");
		return 1;
	}
	/* The same socket buffers meshd asks for, so bursts are not dropped for want of them. */
	int size = 8 << 20;
	setsockopt(udp, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
	setsockopt(udp, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);

	static char frame[65536];
	struct pollfd fds[2] = {{.fd = tap, .events = POLLIN}, {.fd = udp, .events = POLLIN}};
	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			perror("bench-relay: poll");
			return 1;
		}
		if (fds[0].revents & POLLIN) {
			ssize_t n = read(tap, frame, sizeof frame);
			if (n > 0)
				send(udp, frame, (size_t)n, 0); /* a refused send is a lost packet, as on a wire */
		}
		if (fds[1].revents & POLLIN) {
			ssize_t n = recv(udp, frame, sizeof frame, 0);
			if (n > 0 && write(tap, frame, (size_t)n) < 0)
				perror("bench-relay: TAP write");
		}
	}
}
