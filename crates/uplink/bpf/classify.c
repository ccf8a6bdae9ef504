// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//
// quiver's XDP classifier for the af_xdp uplink.
//
// Frames whose (destination MAC, VLAN) belongs to a VNIC, and every broadcast or
// multicast frame (quiverd floods those), are redirected into the AF_XDP socket
// bound to the queue they arrived on. Everything else goes on to the kernel stack
// (XDP_PASS): nothing is dropped here. A queue without a socket falls back to
// XDP_PASS too (the low bits of bpf_redirect_map's flags are the action taken when
// the lookup fails, since Linux 5.6).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Must match `ClassKey` in crates/uplink/src/af_xdp.rs: 8 bytes, no padding.
struct class_key {
	__u8 mac[6];
	__u16 vlan; // VLAN id (host byte order), 0 = untagged
};

// (MAC, VLAN) -> VNIC slot, filled by quiverd.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct class_key);
	__type(value, __u32);
} vnic_macs SEC(".maps");

// Queue index -> AF_XDP socket.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Per-CPU counters: 0 = redirected toward quiverd, 1 = passed to the kernel.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
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

	if ((void *)(eth + 1) > end)
		goto pass;
	__builtin_memcpy(key.mac, eth->h_dest, ETH_ALEN);
	if (eth->h_proto == bpf_htons(ETH_P_8021Q)) {
		__be16 *tci = (void *)(eth + 1);
		if ((void *)(tci + 1) > end)
			goto pass;
		key.vlan = bpf_ntohs(*tci) & 0x0fff;
	}
	// Group bit: broadcast and multicast go to quiverd, which floods them.
	if (!(key.mac[0] & 1) && !bpf_map_lookup_elem(&vnic_macs, &key))
		goto pass;
	count(0);
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
pass:
	count(1);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
