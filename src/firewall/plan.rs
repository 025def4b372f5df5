//! The ruleset a policy produces at a given moment, as one model rendered two ways: nftables
//! JSON (through the `nftables` crate) to apply, and nft syntax for people (`firewall plan`).
//! Both renderings walk the same [`Term`] lists, so they cannot say different things.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use nftables::batch::Batch;
use nftables::expr::{BinaryOperation, CT, Prefix, SetItem};
use nftables::expr::{Elem, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField};
use nftables::schema::Table;
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{Counter, Limit, Log, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::{FirewallError, TABLE, mark};
use crate::config::FirewallConfig;
use crate::policy::Policy;

/// One grant element: packets of sockets marked for `grant` may go to `addr`:`port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub mark: u32,
    pub addr: IpAddr,
    pub port: u16,
    /// Seconds until the kernel removes the element; `None` for an open-ended grant.
    pub timeout: Option<u32>,
    pub comment: String,
}

impl Element {
    /// What the element lets through, without its lifetime.
    pub fn key(&self) -> (u32, IpAddr, u16) {
        (self.mark, self.addr, self.port)
    }
}

/// The bastion's own listening ports, each open only to its own networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    /// The SSH front door, for admin networks.
    pub ssh: Vec<u16>,
    /// The review console, for reviewer networks.
    pub console: Vec<u16>,
}

/// The whole ruleset of table `inet stapsteen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub ssh_ports: Vec<u16>,
    pub console_ports: Vec<u16>,
    pub admin_networks: Vec<IpNet>,
    pub reviewer_networks: Vec<IpNet>,
    pub management_networks: Vec<IpNet>,
    pub elements: Vec<Element>,
}

impl Plan {
    /// The ruleset for `policy` at `now`. Fails if a target lies outside every management
    /// network (the kernel could not guard it) or two grants' marks collide.
    pub fn build(
        fw: &FirewallConfig,
        ports: &Ports,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<Plan, FirewallError> {
        let mut problems = Vec::new();
        for t in &policy.targets {
            if !fw
                .management_networks
                .iter()
                .any(|n| n.contains(&t.address))
            {
                problems.push(format!(
                    "target {} ({}) is in no management network of the config",
                    t.name, t.address
                ));
            }
        }
        let mut marks = HashSet::new();
        for g in &policy.grants {
            if !marks.insert(mark(&g.name)) {
                problems.push(format!(
                    "grant {} has the same firewall mark as another grant; rename one",
                    g.name
                ));
            }
        }
        if !problems.is_empty() {
            return Err(FirewallError::Plan(problems.join("; ")));
        }
        let mut elements = BTreeSet::new();
        for g in &policy.grants {
            let Some(until) = g.open_until(now) else {
                continue;
            };
            let timeout = until.map(|u| {
                // Rounded up, so the kernel never closes before the daemon does.
                let secs = u.duration_since(now).as_secs_f64().ceil();
                secs.clamp(1.0, f64::from(u32::MAX)) as u32
            });
            for name in &g.targets {
                let Some(t) = policy.target(name.as_str()) else {
                    continue;
                };
                for port in g.ports(t) {
                    elements.insert(Element {
                        mark: mark(&g.name),
                        addr: t.address,
                        port,
                        timeout,
                        comment: format!("grant {} target {}", g.name, t.name),
                    });
                }
            }
        }
        let sorted = |p: &[u16]| {
            let mut p = p.to_vec();
            p.sort_unstable();
            p.dedup();
            p
        };
        Ok(Plan {
            ssh_ports: sorted(&ports.ssh),
            console_ports: sorted(&ports.console),
            admin_networks: fw.admin_networks.clone(),
            reviewer_networks: fw.reviewer_networks.clone(),
            management_networks: fw.management_networks.clone(),
            elements: elements.into_iter().collect(),
        })
    }

    /// The element keys, for comparing what should be open with what is.
    pub fn keys(&self) -> BTreeSet<(u32, IpAddr, u16)> {
        self.elements.iter().map(Element::key).collect()
    }

    fn sets(&self) -> Vec<SetDef<'_>> {
        let nets = |v6: bool, from: &[IpNet]| -> Vec<IpNet> {
            from.iter()
                .filter(|n| matches!(n, IpNet::V6(_)) == v6)
                .copied()
                .collect()
        };
        let grants = |v6: bool| -> Vec<&Element> {
            self.elements
                .iter()
                .filter(|e| e.addr.is_ipv6() == v6)
                .collect()
        };
        vec![
            SetDef::Nets("admin4", false, nets(false, &self.admin_networks)),
            SetDef::Nets("admin6", true, nets(true, &self.admin_networks)),
            SetDef::Nets("mgmt4", false, nets(false, &self.management_networks)),
            SetDef::Nets("mgmt6", true, nets(true, &self.management_networks)),
            SetDef::Nets("reviewer4", false, nets(false, &self.reviewer_networks)),
            SetDef::Nets("reviewer6", true, nets(true, &self.reviewer_networks)),
            SetDef::Grants("grants4", false, grants(false)),
            SetDef::Grants("grants6", true, grants(true)),
        ]
    }

    fn chains(&self) -> Vec<ChainDef> {
        let drop_logged = |what: &'static str| vec![Term::Limit, Term::Log(what)];
        let mut input = vec![
            vec![Term::Iifname("lo"), Term::Accept],
            // The bastion's addresses and routes are static: a router advertisement or redirect
            // (from the management network or anywhere) must not re-route it. Before the
            // conntrack rule, which would pass an ICMP redirect as "related".
            vec![Term::Icmp("icmp", ICMP_REROUTE), Term::Drop],
            vec![Term::Icmp("icmpv6", ICMPV6_REROUTE), Term::Drop],
            vec![Term::CtState(&["established", "related"]), Term::Accept],
            vec![Term::CtState(&["invalid"]), Term::Drop],
            // IPv6 does not work without neighbour discovery.
            vec![Term::Icmp("icmpv6", ND_TYPES), Term::Accept],
        ];
        for (ports, v4, v6) in [
            (&self.ssh_ports, "admin4", "admin6"),
            (&self.console_ports, "reviewer4", "reviewer6"),
        ] {
            if ports.is_empty() {
                continue;
            }
            let ports = Term::TcpDport(ports.clone());
            input.push(vec![Term::Saddr(Fam::V4, v4), ports.clone(), Term::Accept]);
            input.push(vec![Term::Saddr(Fam::V6, v6), ports, Term::Accept]);
        }
        input.push(drop_logged("stapsteen input drop: "));
        let mut output = Vec::new();
        for (fam, mgmt, grants) in [(Fam::V4, "mgmt4", "grants4"), (Fam::V6, "mgmt6", "grants6")] {
            // Every packet, not only the first of a connection: an expired grant's element
            // is gone, and so is the rest of its connection.
            output.push(vec![
                Term::Daddr(fam, mgmt),
                Term::MarkDaddrDport(fam, grants),
                Term::Accept,
            ]);
            // The bastion's own reset of a connection whose grant is gone (see
            // `upstream::abort`): without it a withdrawn grant's session would live on at the
            // target. Only what the kernel sends when it resets a connection it tracks: a reset
            // segment (no SYN, FIN, PSH or URG: nothing opens a connection or hands data to an
            // application) of a connection the grants once let through, without IP options or
            // IPv6 extension headers, no longer than a TCP header with every option. So a
            // process with raw sockets cannot use the rule to reach a host or port no grant
            // allowed, nor carry more than a header's worth of bytes.
            output.push(vec![
                Term::Daddr(fam, mgmt),
                Term::CtState(&["established"]),
                Term::BareHeader(fam),
                Term::HeaderLengthAtMost(fam),
                Term::TcpResetOnly,
                Term::Accept,
            ]);
            output.push(vec![
                Term::Daddr(fam, mgmt),
                Term::Limit,
                Term::Log("stapsteen output drop: "),
            ]);
            output.push(vec![
                Term::Daddr(fam, mgmt),
                Term::Count(REFUSED),
                Term::Drop,
            ]);
        }
        vec![
            ChainDef {
                name: "input",
                hook: NfHook::Input,
                policy: NfChainPolicy::Drop,
                rules: input,
            },
            ChainDef {
                name: "forward",
                hook: NfHook::Forward,
                policy: NfChainPolicy::Drop,
                rules: vec![drop_logged("stapsteen forward drop: ")],
            },
            ChainDef {
                name: "output",
                hook: NfHook::Output,
                policy: NfChainPolicy::Accept,
                rules: output,
            },
        ]
    }

    /// nft syntax, as `nft -f` reads it and `firewall plan` prints it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "table inet {TABLE} {{");
        let _ = writeln!(out, "\tcounter {REFUSED} {{\n\t}}");
        for set in self.sets() {
            set.write_text(&mut out);
        }
        for chain in self.chains() {
            let hook = match chain.hook {
                NfHook::Input => "input",
                NfHook::Forward => "forward",
                _ => "output",
            };
            let policy = match chain.policy {
                NfChainPolicy::Drop => "drop",
                NfChainPolicy::Accept => "accept",
            };
            let _ = writeln!(out, "\tchain {} {{", chain.name);
            let _ = writeln!(
                out,
                "\t\ttype filter hook {hook} priority filter; policy {policy};"
            );
            for rule in &chain.rules {
                let terms: Vec<String> = rule.iter().map(Term::text).collect();
                let _ = writeln!(out, "\t\t{}", terms.join(" "));
            }
            let _ = writeln!(out, "\t}}");
        }
        out.push_str("}\n");
        out
    }

    /// One nft transaction that replaces the table: add (so delete cannot fail), delete, build.
    /// nft applies a transaction whole or not at all.
    pub fn to_nftables(&self) -> Nftables<'static> {
        let table = || {
            NfListObject::Table(Table {
                family: NfFamily::INet,
                name: TABLE.into(),
                handle: None,
            })
        };
        let mut batch = Batch::new();
        batch.add(table());
        batch.delete(table());
        batch.add(table());
        batch.add(NfListObject::Counter(nftables::schema::Counter {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: REFUSED.into(),
            handle: None,
            packets: None,
            bytes: None,
        }));
        for set in self.sets() {
            batch.add(NfListObject::Set(Box::new(set.json())));
        }
        for chain in self.chains() {
            batch.add(NfListObject::Chain(Chain {
                family: NfFamily::INet,
                table: TABLE.into(),
                name: chain.name.into(),
                newname: None,
                handle: None,
                _type: Some(NfChainType::Filter),
                hook: Some(chain.hook),
                prio: Some(0),
                dev: None,
                policy: Some(chain.policy),
            }));
            for rule in chain.rules {
                batch.add(NfListObject::Rule(Rule {
                    family: NfFamily::INet,
                    table: TABLE.into(),
                    chain: chain.name.into(),
                    expr: rule.iter().map(Term::json).collect::<Vec<_>>().into(),
                    handle: None,
                    index: None,
                    comment: None,
                }));
            }
        }
        batch.to_nftables()
    }
}

#[derive(Clone, Copy)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn proto(self) -> &'static str {
        match self {
            Fam::V4 => "ip",
            Fam::V6 => "ip6",
        }
    }
}

/// The pieces the rules are made of.
#[derive(Clone)]
enum Term {
    Iifname(&'static str),
    CtState(&'static [&'static str]),
    /// `PROTOCOL type TYPES`.
    Icmp(&'static str, &'static [&'static str]),
    Saddr(Fam, &'static str),
    Daddr(Fam, &'static str),
    TcpDport(Vec<u16>),
    MarkDaddrDport(Fam, &'static str),
    /// TCP segments whose only flag of [`RESET_MASK`] is RST (ACK may be set).
    TcpResetOnly,
    /// IPv4 without options, IPv6 with TCP right after its header (no extension headers).
    BareHeader(Fam),
    /// No longer than the IP header and the longest TCP header ([`MAX_TCP_HEADER`]).
    HeaderLengthAtMost(Fam),
    Limit,
    Log(&'static str),
    Count(&'static str),
    Accept,
    Drop,
}

/// The named counter of packets the output chain refused: what a session's kernel check stopped.
pub const REFUSED: &str = "refused_output";

/// The TCP flags a reset the output chain lets through is checked for: of these, RST alone.
const RESET_MASK: &[&str] = &["fin", "syn", "rst", "psh", "urg"];

/// The longest TCP header (data offset 15 words, all options): a reset the kernel sends carries
/// no data, only options (timestamps, SACK blocks).
const MAX_TCP_HEADER: u32 = 60;
/// An IPv4 header without options.
const IPV4_HEADER: u32 = 20;

const ND_TYPES: &[&str] = &["nd-neighbor-solicit", "nd-neighbor-advert"];
const ICMP_REROUTE: &[&str] = &["redirect"];
const ICMPV6_REROUTE: &[&str] = &["nd-router-advert", "nd-redirect"];

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn matches(
    left: Expression<'static>,
    right: Expression<'static>,
    op: Operator,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn set_ref(name: &str) -> Expression<'static> {
    Expression::String(format!("@{name}").into())
}

fn anon_set(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

impl Term {
    fn text(&self) -> String {
        match self {
            Term::Iifname(i) => format!("iifname \"{i}\""),
            Term::CtState(s) => format!("ct state {}", s.join(",")),
            Term::Icmp(proto, [t]) => format!("{proto} type {t}"),
            Term::Icmp(proto, types) => format!("{proto} type {{ {} }}", types.join(", ")),
            Term::Saddr(f, set) => format!("{} saddr @{set}", f.proto()),
            Term::Daddr(f, set) => format!("{} daddr @{set}", f.proto()),
            Term::TcpDport(p) if p.len() == 1 => format!("tcp dport {}", p[0]),
            Term::TcpDport(p) => format!(
                "tcp dport {{ {} }}",
                p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            ),
            Term::MarkDaddrDport(f, set) => {
                format!("meta mark . {} daddr . tcp dport @{set}", f.proto())
            }
            Term::TcpResetOnly => format!("tcp flags & ({}) == rst", RESET_MASK.join(" | ")),
            Term::BareHeader(Fam::V4) => "ip hdrlength 5".into(),
            Term::BareHeader(Fam::V6) => "ip6 nexthdr tcp".into(),
            Term::HeaderLengthAtMost(Fam::V4) => {
                format!("ip length <= {}", IPV4_HEADER + MAX_TCP_HEADER)
            }
            Term::HeaderLengthAtMost(Fam::V6) => format!("ip6 length <= {MAX_TCP_HEADER}"),
            Term::Limit => "limit rate 10/minute burst 5 packets".into(),
            Term::Log(prefix) => format!("log prefix \"{prefix}\""),
            Term::Accept => "accept".into(),
            Term::Drop => "drop".into(),
            Term::Count(name) => format!("counter name \"{name}\""),
        }
    }

    fn json(&self) -> Statement<'static> {
        match self {
            Term::Iifname(i) => matches(
                Expression::Named(NamedExpression::Meta(Meta {
                    key: MetaKey::Iifname,
                })),
                Expression::String((*i).into()),
                Operator::EQ,
            ),
            Term::CtState(s) => matches(
                Expression::Named(NamedExpression::CT(CT {
                    key: "state".into(),
                    family: None,
                    dir: None,
                })),
                Expression::List(s.iter().map(|v| Expression::String((*v).into())).collect()),
                Operator::IN,
            ),
            Term::Icmp(proto, [t]) => matches(
                payload(proto, "type"),
                Expression::String((*t).into()),
                Operator::EQ,
            ),
            Term::Icmp(proto, types) => matches(
                payload(proto, "type"),
                anon_set(
                    types
                        .iter()
                        .map(|t| Expression::String((*t).into()))
                        .collect(),
                ),
                Operator::EQ,
            ),
            Term::Saddr(f, set) => matches(payload(f.proto(), "saddr"), set_ref(set), Operator::EQ),
            Term::Daddr(f, set) => matches(payload(f.proto(), "daddr"), set_ref(set), Operator::EQ),
            Term::TcpDport(p) if p.len() == 1 => matches(
                payload("tcp", "dport"),
                Expression::Number(u32::from(p[0])),
                Operator::EQ,
            ),
            Term::TcpDport(p) => matches(
                payload("tcp", "dport"),
                anon_set(
                    p.iter()
                        .map(|v| Expression::Number(u32::from(*v)))
                        .collect(),
                ),
                Operator::EQ,
            ),
            Term::MarkDaddrDport(f, set) => matches(
                Expression::Named(NamedExpression::Concat(vec![
                    Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Mark })),
                    payload(f.proto(), "daddr"),
                    payload("tcp", "dport"),
                ])),
                set_ref(set),
                Operator::EQ,
            ),
            Term::TcpResetOnly => matches(
                Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                    payload("tcp", "flags"),
                    // A list of flag names is their bitmask, as nft itself lists it.
                    Expression::List(
                        RESET_MASK
                            .iter()
                            .map(|f| Expression::String((*f).into()))
                            .collect(),
                    ),
                ))),
                Expression::String("rst".into()),
                Operator::EQ,
            ),
            Term::BareHeader(Fam::V4) => matches(
                payload("ip", "hdrlength"),
                Expression::Number(IPV4_HEADER / 4),
                Operator::EQ,
            ),
            Term::BareHeader(Fam::V6) => matches(
                payload("ip6", "nexthdr"),
                Expression::String("tcp".into()),
                Operator::EQ,
            ),
            // The IPv4 length is the whole packet's, the IPv6 one its payload's.
            Term::HeaderLengthAtMost(Fam::V4) => matches(
                payload("ip", "length"),
                Expression::Number(IPV4_HEADER + MAX_TCP_HEADER),
                Operator::LEQ,
            ),
            Term::HeaderLengthAtMost(Fam::V6) => matches(
                payload("ip6", "length"),
                Expression::Number(MAX_TCP_HEADER),
                Operator::LEQ,
            ),
            Term::Limit => Statement::Limit(Limit {
                rate: 10,
                rate_unit: None,
                per: Some("minute".into()),
                burst: Some(5),
                burst_unit: None,
                inv: None,
            }),
            Term::Log(prefix) => Statement::Log(Some(Log {
                prefix: Some((*prefix).into()),
                ..Log::new(None)
            })),
            Term::Accept => Statement::Accept(None),
            Term::Drop => Statement::Drop(None),
            Term::Count(name) => Statement::Counter(Counter::Named((*name).into())),
        }
    }
}

struct ChainDef {
    name: &'static str,
    hook: NfHook,
    policy: NfChainPolicy,
    rules: Vec<Vec<Term>>,
}

enum SetDef<'a> {
    Nets(&'static str, bool, Vec<IpNet>),
    Grants(&'static str, bool, Vec<&'a Element>),
}

impl SetDef<'_> {
    fn write_text(&self, out: &mut String) {
        let (name, v6) = match self {
            SetDef::Nets(n, v6, _) | SetDef::Grants(n, v6, _) => (*n, *v6),
        };
        let addr = if v6 { "ipv6_addr" } else { "ipv4_addr" };
        let _ = writeln!(out, "\tset {name} {{");
        let items: Vec<String> = match self {
            SetDef::Nets(_, _, nets) => {
                let _ = writeln!(out, "\t\ttype {addr}\n\t\tflags interval");
                nets.iter().map(|n| n.trunc().to_string()).collect()
            }
            SetDef::Grants(_, _, elements) => {
                let _ = writeln!(
                    out,
                    "\t\ttype mark . {addr} . inet_service\n\t\tflags timeout"
                );
                elements
                    .iter()
                    .map(|e| {
                        let timeout = e
                            .timeout
                            .map(|t| format!(" timeout {t}s"))
                            .unwrap_or_default();
                        format!(
                            "0x{:08x} . {} . {}{timeout} comment \"{}\"",
                            e.mark, e.addr, e.port, e.comment
                        )
                    })
                    .collect()
            }
        };
        if !items.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(",\n\t\t\t     "));
        }
        let _ = writeln!(out, "\t}}");
    }

    fn json(&self) -> Set<'static> {
        let (name, set_type, flag, elem): (_, _, _, Vec<Expression<'static>>) = match self {
            SetDef::Nets(name, v6, nets) => (
                *name,
                SetTypeValue::Single(if *v6 {
                    SetType::Ipv6Addr
                } else {
                    SetType::Ipv4Addr
                }),
                SetFlag::Interval,
                nets.iter()
                    .map(|n| {
                        let n = n.trunc();
                        Expression::Named(NamedExpression::Prefix(Prefix {
                            addr: Box::new(Expression::String(n.addr().to_string().into())),
                            len: u32::from(n.prefix_len()),
                        }))
                    })
                    .collect(),
            ),
            SetDef::Grants(name, v6, elements) => (
                *name,
                SetTypeValue::Concatenated(Cow::Owned(vec![
                    SetType::Mark,
                    if *v6 {
                        SetType::Ipv6Addr
                    } else {
                        SetType::Ipv4Addr
                    },
                    SetType::InetService,
                ])),
                SetFlag::Timeout,
                elements
                    .iter()
                    .map(|e| {
                        Expression::Named(NamedExpression::Elem(Elem {
                            val: Box::new(Expression::Named(NamedExpression::Concat(vec![
                                Expression::Number(e.mark),
                                Expression::String(e.addr.to_string().into()),
                                Expression::Number(u32::from(e.port)),
                            ]))),
                            timeout: e.timeout,
                            expires: None,
                            comment: Some(e.comment.clone().into()),
                            counter: None,
                        }))
                    })
                    .collect(),
            ),
        };
        Set {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: name.into(),
            handle: None,
            set_type,
            policy: None,
            flags: Some(HashSet::from([flag])),
            elem: (!elem.is_empty()).then(|| elem.into()),
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            ssh_ports: vec![22],
            console_ports: vec![],
            admin_networks: vec!["10.10.0.0/24".parse().unwrap()],
            reviewer_networks: vec![],
            management_networks: vec![
                "10.20.0.0/24".parse().unwrap(),
                "fd20::/64".parse().unwrap(),
            ],
            elements: vec![],
        }
    }

    /// The output chain's rules, as text.
    fn output(text: &str) -> Vec<&str> {
        let chain = text.split("chain output {").nth(1).unwrap();
        chain.lines().map(str::trim).skip(2).take(6).collect()
    }

    #[test]
    fn resets_alone_pass_between_the_grants_and_the_drop() {
        let text = plan().to_text();
        assert_eq!(
            output(&text),
            [
                "ip daddr @mgmt4 meta mark . ip daddr . tcp dport @grants4 accept",
                "ip daddr @mgmt4 ct state established ip hdrlength 5 ip length <= 80 tcp flags & (fin | syn | rst | psh | urg) == rst accept",
                "ip daddr @mgmt4 limit rate 10/minute burst 5 packets log prefix \"stapsteen output drop: \"",
                "ip daddr @mgmt4 counter name \"refused_output\" drop",
                "ip6 daddr @mgmt6 meta mark . ip6 daddr . tcp dport @grants6 accept",
                "ip6 daddr @mgmt6 ct state established ip6 nexthdr tcp ip6 length <= 60 tcp flags & (fin | syn | rst | psh | urg) == rst accept",
            ]
        );
    }

    #[test]
    fn the_reset_rule_in_json_is_what_nft_lists() {
        let json = serde_json::to_value(plan().to_nftables()).unwrap();
        let rules: Vec<&serde_json::Value> = json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .filter(|r| r["chain"] == "output")
            .collect();
        // As `nft -j list` (nft 1.0.6) shows the rule after loading its text, but for `ct state`
        // with one state, which it lists as a string rather than a list of one.
        assert_eq!(
            rules[1]["expr"],
            serde_json::json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@mgmt4"}},
                {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established"]}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "hdrlength"}}, "right": 5}},
                {"match": {"op": "<=", "left": {"payload": {"protocol": "ip", "field": "length"}}, "right": 80}},
                {"match": {"op": "==", "left": {"&": [
                    {"payload": {"protocol": "tcp", "field": "flags"}},
                    ["fin", "syn", "rst", "psh", "urg"]
                ]}, "right": "rst"}},
                {"accept": null}
            ])
        );
        assert_eq!(
            rules[5]["expr"].as_array().unwrap()[2..4],
            serde_json::json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "nexthdr"}}, "right": "tcp"}},
                {"match": {"op": "<=", "left": {"payload": {"protocol": "ip6", "field": "length"}}, "right": 60}}
            ])
            .as_array()
            .unwrap()[..]
        );
    }
}
