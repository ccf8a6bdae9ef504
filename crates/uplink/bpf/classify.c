// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//
// quiver's XDP classifier for the af_xdp uplink.
//
// Unicast frames whose (destination MAC, VLAN) belongs to a VNIC are redirected
// into an AF_XDP socket bound to the queue they arrived on. Everything else goes
// on to the kernel stack (XDP_PASS): nothing is dropped here. That includes every
// broadcast and multicast frame: the host's own stack needs them (ARP for its
// address, IPv6 neighbour discovery), and quiverd reads them for its VNICs through
// an AF_PACKET socket on the interface (crates/uplink/src/af_xdp/group.rs). A queue without a socket falls back to
// XDP_PASS too (the low bits of bpf_redirect_map's flags are the action taken when
// the lookup fails, since Linux 5.6).
//
// Each queue has a shared socket (column 0 of `xsks`) and may have dedicated
// sockets, one per column c >= 1, each carrying one VNIC's frames: the VNIC's
// `vnic_macs` value is its column, and its frames on queue q go to
// xsks[c * MAX_QUEUES + q]. A missing dedicated entry (being set up or torn
// down) falls back to the queue's shared socket.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Must match MAX_AF_XDP_QUEUES and MAX_DEDICATED in crates/uplink/src/af_xdp/mod.rs.
#define MAX_QUEUES 64
#define MAX_DEDICATED 63

// Must match `ClassKey` in crates/uplink/src/af_xdp/mod.rs: 8 bytes, no padding.
struct class_key {
	__u8 mac[6];
	__u16 vlan; // VLAN id (host byte order), 0 = untagged
};

// (MAC, VLAN) -> column: 0 = the shared sockets, c >= 1 = dedicated column c.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct class_key);
	__type(value, __u32);
} vnic_macs SEC(".maps");

// column * MAX_QUEUES + queue index -> AF_XDP socket.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES * (1 + MAX_DEDICATED));
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Per-CPU counters: 0 = redirected to a shared socket, 1 = passed to the kernel
// (broadcast and multicast included), 2 = redirected to a dedicated socket. Each
// frame counts once.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&verdicts, &which);
	if (n)
		*n += 1;
}

SEC("xdp")
int classify(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct class_key key = {};
	__u32 queue = ctx->rx_queue_index;
	__u32 *column;

	// Beyond column 0 the index would land in another column.
	if (queue >= MAX_QUEUES)
		goto pass;
	if ((void *)(eth + 1) > end)
		goto pass;
	__builtin_memcpy(key.mac, eth->h_dest, ETH_ALEN);
	if (eth->h_proto == bpf_htons(ETH_P_8021Q)) {
		__be16 *tci = (void *)(eth + 1);
		if ((void *)(tci + 1) > end)
			goto pass;
		key.vlan = bpf_ntohs(*tci) & 0x0fff;
	}
	// Group bit: broadcast and multicast are the kernel's too; quiverd's group
	// socket reads them on their way in.
	if (key.mac[0] & 1)
		goto pass;
	column = bpf_map_lookup_elem(&vnic_macs, &key);
	if (!column)
		goto pass;
	if (*column >= 1 && *column <= MAX_DEDICATED) {
		__u32 index = *column * MAX_QUEUES + queue;
		// Looking an XSKMAP up from XDP works since Linux 5.3.
		if (bpf_map_lookup_elem(&xsks, &index)) {
			count(2);
			return bpf_redirect_map(&xsks, index, XDP_PASS);
		}
	}
	count(0);
	return bpf_redirect_map(&xsks, queue, XDP_PASS);
pass:
	count(1);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
