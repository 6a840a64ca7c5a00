// vantio enforcer: egress decisions for agent cgroups, every decision recorded.
//
// Compiled by bcc at enforcer start. Built-in constants (-D): AGENT_LEVEL (cgroup
// level of agent cgroups: the slice's level + 1), ROOT_CGID (the agents root's cgroup
// id), RINGBUF_PAGES, MAX_RANGES.
// Fail closed: a cgroup below the agents root that the live policy does not know (an
// agent unit restarted by systemd gets a new cgroup, so a new id, until the daemon
// re-keys it) is blocked, whatever mode its agent had, and recorded with F_UNKNOWN.
// The policy lives in maps keyed by a generation number: a reload writes the new
// generation's entries, then flips `config[0]`, then deletes the old ones, so
// there is no moment without a policy.
// What must outlive a daemon is pinned by the daemon and reused by the next one,
// which reopens the pins by path and loads the programs with them in place of the
// maps bcc made here (not bcc's pinned tables: bcc reopens those by id, which the
// kernel allows CAP_SYS_ADMIN only): the ring buffer (events not yet in the ledger;
// the daemon moves the consumer position only once the ledger has acknowledged
// them), the loss counters, the quarantined agents, and `recorded` (user space
// only: what is already in the ledger, so that a new daemon reports the losses its
// predecessor did not).
#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>

#define STAGE_CONNECT4 0
#define STAGE_CONNECT6 1
#define STAGE_SENDMSG4 2
#define STAGE_SENDMSG6 3
#define STAGE_EXEC 4
#define N_STAGES 5

#define PERMIT 0
#define BLOCK 1
#define QUARANTINE 2

#define F_MONITOR 1   // not enforced: the action is what enforce mode would have done
#define F_MAPPED 2    // an IPv4-mapped IPv6 address, decided by the IPv4 rules
#define F_UNKNOWN 4   // a cgroup below the agents root that no agent of the policy owns

#define P_TCP 1
#define P_UDP 2

#define NETS4 1  // agent_val.nets: the agent has IPv4 rules wider than one address
#define NETS6 2  // and IPv6 ones

struct agent_key { u64 cgid; u32 gen; u32 pad; };
struct agent_val { u32 idx; u8 enforce; u8 dflt; u8 nets; u8 pad; };

struct port_range { u16 lo; u16 hi; u32 protos; };
struct rules { u32 n; u32 pad; struct port_range r[MAX_RANGES]; };

// Rules for one address (a /32 or /128, the usual case: host names resolve to
// addresses) are in a hash map, found in one lookup; wider prefixes in LPM tries,
// whose lookup walks the trie (about 100 ns more with 10,000 entries). Each entry
// holds every port range that applies to its addresses (policy.compile_maps merges
// the covering prefixes' ranges in), so the first entry found decides.
struct host4 { u32 gen; u32 agent; u32 addr; };
struct host6 { u32 gen; u32 agent; u32 addr[4]; };
struct lpm4 { u32 prefixlen; u32 gen; u32 agent; u32 addr; };
struct lpm6 { u32 prefixlen; u32 gen; u32 agent; u32 addr[4]; };

// 64 bytes: one cache line, and only what the records carry (the ledger stamps time).
// The ring buffer is pinned and outlives the daemon: a change to this layout must
// also rename its pin (map_events), or a new daemon would misread old records.
struct event {
    u64 cgid;
    u32 pid, tgid, uid, gid;
    u32 addr[4];
    u16 port;
    u8 stage, action, flags, proto, family, pad;
    char comm[16];
};

struct exec_event {
    struct event h;
    u32 old_pid;
    u32 pad;
    char path[128];
};

// [0] = live generation; [1] = 1 while any agent is quarantined (else egress and
// connects skip the quarantine lookup: the common case costs one array read)
BPF_ARRAY(config, u32, 2);
BPF_HASH(agents, struct agent_key, struct agent_val, 4096);
BPF_F_TABLE("hash", struct host4, struct rules, hosts4, 65536, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct host6, struct rules, hosts6, 65536, BPF_F_NO_PREALLOC);
BPF_F_TABLE("lpm_trie", struct lpm4, struct rules, rules4, 65536, BPF_F_NO_PREALLOC);
BPF_F_TABLE("lpm_trie", struct lpm6, struct rules, rules6, 65536, BPF_F_NO_PREALLOC);
BPF_HASH(quarantined, u64, u64, 4096);
BPF_PERCPU_ARRAY(lost, u64, N_STAGES * 2);
// [stage * 2 + enforce]: kernel losses in the ledger; then per action (permit, block,
// quarantine) the daemon's losses, then those of them in the ledger; then the
// CLOCK_REALTIME of the last gap report (where the next gap's window starts).
BPF_ARRAY(recorded, u64, N_STAGES * 2 + 7);

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

// The daemon polls on a timer, so no submit pays for waking it up.
#define NO_WAKEUP 1  // BPF_RB_NO_WAKEUP

static __always_inline u32 live_gen(void) {
    u32 zero = 0;
    u32 *g = config.lookup(&zero);
    return g ? *g : 0;
}

static __always_inline int any_quarantined(void) {
    u32 one = 1;
    u32 *q = config.lookup(&one);
    return q && *q;
}

static __always_inline void count_lost(u32 stage, u32 enforce) {
    u32 i = stage * 2 + (enforce ? 1 : 0);
    u64 *n = lost.lookup(&i);
    if (n)
        *n += 1;
}

static __always_inline int ports_allow(struct rules *rs, u16 port, u32 proto) {
    if (!rs)
        return 0;
    u32 n = rs->n;
    for (int i = 0; i < MAX_RANGES; i++) {
        if (i >= n)
            break;
        if (port >= rs->r[i].lo && port <= rs->r[i].hi && (rs->r[i].protos & proto))
            return 1;
    }
    return 0;
}

static __always_inline u32 proto_of(struct bpf_sock_addr *ctx) {
    if (ctx->protocol == IPPROTO_UDP || ctx->type == 2 /* SOCK_DGRAM */)
        return P_UDP;
    return P_TCP;
}

static __always_inline void fill(struct event *e, u64 cgid) {
    e->cgid = cgid;
    u64 pt = bpf_get_current_pid_tgid();
    e->pid = (u32)pt;
    e->tgid = pt >> 32;
    u64 ug = bpf_get_current_uid_gid();
    e->uid = (u32)ug;
    e->gid = ug >> 32;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

// The programs are attached to the agents root, so they only run below it: a caller
// whose agent cgroup the live policy lacks is blocked and recorded (the record's cgroup
// tells the daemon which new cgroup to re-key). Taken only on a miss: agents pay nothing.
static __always_inline int unknown(struct bpf_sock_addr *ctx, u32 stage, int v6, u64 cgid) {
    if (bpf_get_current_ancestor_cgroup_id(AGENT_LEVEL - 1) != ROOT_CGID)
        return 1;  // not below this root (a socket made elsewhere): not ours to decide
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        count_lost(stage, 1);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    fill(e, cgid);
    if (v6) {
        e->addr[0] = ctx->user_ip6[0];
        e->addr[1] = ctx->user_ip6[1];
        e->addr[2] = ctx->user_ip6[2];
        e->addr[3] = ctx->user_ip6[3];
    } else {
        e->addr[0] = ctx->user_ip4;
    }
    e->port = bpf_ntohs((u16)ctx->user_port);
    e->stage = stage;
    e->action = BLOCK;
    e->flags = F_UNKNOWN;
    e->proto = proto_of(ctx);
    e->family = v6 ? 6 : 4;
    events.ringbuf_submit(e, NO_WAKEUP);
    return 0;
}

// The caller's agent: its own cgroup is looked up first (usually the agent's cgroup
// itself: one helper call less), then its ancestor at the agents' level (a cgroup
// below the agent's). NULL when no agent of the live policy owns it.
static __always_inline struct agent_val *agent_of(u64 cgid, u32 gen, u64 *agent_cgid) {
    struct agent_key ak = {.cgid = cgid, .gen = gen};
    struct agent_val *av = agents.lookup(&ak);
    *agent_cgid = cgid;
    if (av)
        return av;
    ak.cgid = bpf_get_current_ancestor_cgroup_id(AGENT_LEVEL);
    if (ak.cgid == cgid)
        return 0;
    *agent_cgid = ak.cgid;
    return agents.lookup(&ak);
}

static __always_inline struct rules *rules_v4(u32 gen, struct agent_val *av, u32 addr) {
    struct host4 h = {.gen = gen, .agent = av->idx, .addr = addr};
    struct rules *rs = hosts4.lookup(&h);
    if (rs || !(av->nets & NETS4))
        return rs;
    struct lpm4 k4 = {.prefixlen = 96, .gen = gen, .agent = av->idx, .addr = addr};
    return rules4.lookup(&k4);
}

static __always_inline struct rules *rules_v6(u32 gen, struct agent_val *av, u32 *addr) {
    struct host6 h = {.gen = gen, .agent = av->idx};
    h.addr[0] = addr[0]; h.addr[1] = addr[1]; h.addr[2] = addr[2]; h.addr[3] = addr[3];
    struct rules *rs = hosts6.lookup(&h);
    if (rs || !(av->nets & NETS6))
        return rs;
    struct lpm6 k6 = {.prefixlen = 192, .gen = gen, .agent = av->idx};
    k6.addr[0] = addr[0]; k6.addr[1] = addr[1]; k6.addr[2] = addr[2]; k6.addr[3] = addr[3];
    return rules6.lookup(&k6);
}

// Decide and record one sock_addr call. family 4: addr[0] holds the IPv4 address.
static __always_inline int decide(struct bpf_sock_addr *ctx, u32 stage, int v6) {
    u64 cgid = bpf_get_current_cgroup_id();
    u32 gen = live_gen();
    u64 agent_cgid;
    struct agent_val *av = agent_of(cgid, gen, &agent_cgid);
    if (!av)
        return unknown(ctx, stage, v6, cgid);
    u32 enforce = av->enforce;
    u32 proto = proto_of(ctx);
    u16 port = bpf_ntohs((u16)ctx->user_port);
    u32 addr[4] = {};
    u8 flags = 0;
    struct rules *rs = 0;
    if (v6) {
        addr[0] = ctx->user_ip6[0];
        addr[1] = ctx->user_ip6[1];
        addr[2] = ctx->user_ip6[2];
        addr[3] = ctx->user_ip6[3];
        if (addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff)) {
            flags |= F_MAPPED;
            rs = rules_v4(gen, av, addr[3]);
        } else {
            rs = rules_v6(gen, av, addr);
        }
    } else {
        addr[0] = ctx->user_ip4;
        rs = rules_v4(gen, av, addr[0]);
    }
    u8 action = PERMIT;
    u64 *q = any_quarantined() ? quarantined.lookup(&agent_cgid) : 0;
    if (q)
        action = QUARANTINE;
    else if (!ports_allow(rs, port, proto))
        action = av->dflt;
    if (!enforce)
        flags |= F_MONITOR;
    else if (action == QUARANTINE && !q) {
        u64 zero = 0;
        quarantined.insert(&agent_cgid, &zero);  // egress is severed from this moment
        u32 one = 1;
        config.update(&one, &one);
    }

    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        count_lost(stage, enforce);
        return enforce ? 0 : 1;  // no unrecorded permit in enforce mode
    }
    fill(e, cgid);
    e->addr[0] = addr[0]; e->addr[1] = addr[1]; e->addr[2] = addr[2]; e->addr[3] = addr[3];
    e->port = port;
    e->stage = stage;
    e->action = action;
    e->flags = flags;
    e->proto = proto;
    e->family = v6 ? 6 : 4;
    e->pad = 0;
    events.ringbuf_submit(e, NO_WAKEUP);
    if (!enforce)
        return 1;
    return action == PERMIT ? 1 : 0;
}

int connect4(struct bpf_sock_addr *ctx) { return decide(ctx, STAGE_CONNECT4, 0); }
int connect6(struct bpf_sock_addr *ctx) { return decide(ctx, STAGE_CONNECT6, 1); }
int sendmsg4(struct bpf_sock_addr *ctx) { return decide(ctx, STAGE_SENDMSG4, 0); }
int sendmsg6(struct bpf_sock_addr *ctx) { return decide(ctx, STAGE_SENDMSG6, 1); }

// Quarantined agents: every egress packet is dropped and its bytes counted.
int egress(struct __sk_buff *skb) {
    if (!any_quarantined())
        return 1;
    u64 agent_cgid = bpf_skb_ancestor_cgroup_id(skb, AGENT_LEVEL);
    u64 *severed = quarantined.lookup(&agent_cgid);
    if (!severed)
        return 1;
    __sync_fetch_and_add(severed, skb->len);
    return 0;
}

// Exec lineage: which program each agent process became.
// Every exec on the host runs it (a tracepoint is global): one helper call sends
// those outside the agents root away.
int on_exec(struct tracepoint__sched__sched_process_exec *args) {
    if (bpf_get_current_ancestor_cgroup_id(AGENT_LEVEL - 1) != ROOT_CGID)
        return 0;
    u64 cgid = bpf_get_current_cgroup_id();
    u64 agent_cgid;
    // an exec in a cgroup below the root that the policy lacks is recorded too: its
    // record is often the daemon's first news of a restarted agent
    struct agent_val *av = agent_of(cgid, live_gen(), &agent_cgid);
    struct exec_event *e = events.ringbuf_reserve(sizeof(struct exec_event));
    if (!e) {
        count_lost(STAGE_EXEC, av ? av->enforce : 1);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    fill(&e->h, cgid);
    e->h.stage = STAGE_EXEC;
    e->h.flags = !av ? F_UNKNOWN : av->enforce ? 0 : F_MONITOR;
    e->old_pid = args->old_pid;
#ifndef NO_KERNEL_READ
    TP_DATA_LOC_READ_STR(e->path, filename, sizeof(e->path));
#endif
    events.ringbuf_submit(e, NO_WAKEUP);
    return 0;
}
