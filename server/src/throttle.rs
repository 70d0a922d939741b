//! Throttling of failed logins that an attacker cannot turn against the coordinators.
//!
//! - **Per account, a delay, never a lock-out.** After `free_failures` failures of one user name,
//!   each further attempt must wait for a delay that doubles with every failure (1 s, 2 s, 4 s,
//!   …) up to `max_delay` (60 s by default). An attempt made during the delay is refused without
//!   checking the password and does not count, so guessing slows to one try per `max_delay`
//!   while the account's owner waits at most that long. The failures are forgotten after a quiet
//!   `window`, and at once when the owner logs in.
//! - **Per client, a limit.** One client address may fail `client_max_failures` times per
//!   `window` (over all names); past that its logins are refused until the window ends. The
//!   address is the real client's (`trusted_proxies`, see [`client_address`]), so a reverse
//!   proxy or a carrier's NAT in front of many people is not one client; IPv6 addresses count
//!   per /64, what one subscriber gets.
//!
//! Memory is bounded without ever forgetting everything at once: accounts that exist are kept
//! in a map bounded by the number of accounts; unknown names and client addresses each in an LRU
//! map of fixed capacity, where a sprayed name only pushes out the least recently seen other
//! unknown names or addresses. Kept in memory: a restart forgets it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use hashlink::LruCache;

/// How many unknown user names the throttle remembers.
const UNKNOWN_NAMES: usize = 10_000;

/// How many client addresses the throttle remembers.
const CLIENTS: usize = 100_000;

/// Failures of one account (or unknown name).
#[derive(Clone, Copy, Debug, Default)]
struct Backoff {
    failures: u32,
    last_ms: u64,
}

/// Failures of one client in its current window.
#[derive(Clone, Copy, Debug)]
struct Window {
    start_ms: u64,
    failures: u32,
}

struct State {
    known: HashMap<String, Backoff>,
    unknown: LruCache<String, Backoff>,
    clients: LruCache<String, Window>,
}

/// Failed logins per account and per client (see the module docs).
pub struct LoginThrottle {
    free_failures: u32,
    max_delay_ms: u64,
    client_max_failures: u32,
    window_ms: u64,
    state: Mutex<State>,
}

impl LoginThrottle {
    /// `max_failures` failures of an account before delays start (a client may fail ten times
    /// as many per window), remembered for `window_secs`; delays up to `max_delay_secs`.
    pub fn new(max_failures: usize, window_secs: u64, max_delay_secs: u64) -> Self {
        let free = u32::try_from(max_failures).unwrap_or(u32::MAX);
        Self {
            free_failures: free,
            max_delay_ms: max_delay_secs.saturating_mul(1000),
            client_max_failures: free.saturating_mul(10),
            window_ms: window_secs.saturating_mul(1000),
            state: Mutex::new(State {
                known: HashMap::new(),
                unknown: LruCache::new(UNKNOWN_NAMES),
                clients: LruCache::new(CLIENTS),
            }),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delay after `failures` failures.
    fn delay_ms(&self, failures: u32) -> u64 {
        match failures.checked_sub(self.free_failures) {
            None => 0,
            Some(extra) => 1000u64.saturating_mul(1 << extra.min(32)).min(self.max_delay_ms),
        }
    }

    /// The failures of a backoff that still count at `now_ms`.
    fn current(&self, b: Backoff, now_ms: u64) -> u32 {
        if now_ms.saturating_sub(b.last_ms) >= self.window_ms { 0 } else { b.failures }
    }

    /// `Err(seconds to wait)` if this attempt must not be checked now: the account is in its
    /// delay, or the client has failed too often in its window. `known`: the account exists.
    pub fn check(&self, name: &str, known: bool, client: &str, now_ms: u64) -> Result<(), u64> {
        let mut state = self.locked();
        let backoff =
            if known { state.known.get(name).copied() } else { state.unknown.get(name).copied() };
        let mut wait_ms = backoff.map_or(0, |b| {
            let until = b.last_ms.saturating_add(self.delay_ms(self.current(b, now_ms)));
            until.saturating_sub(now_ms)
        });
        if let Some(w) = state.clients.get(client)
            && now_ms.saturating_sub(w.start_ms) < self.window_ms
            && w.failures >= self.client_max_failures
        {
            wait_ms = wait_ms.max(w.start_ms.saturating_add(self.window_ms).saturating_sub(now_ms));
        }
        if wait_ms == 0 { Ok(()) } else { Err(wait_ms.div_ceil(1000).max(1)) }
    }

    /// Records a failed attempt (one that was checked).
    pub fn fail(&self, name: &str, known: bool, client: &str, now_ms: u64) {
        let mut state = self.locked();
        let previous =
            if known { state.known.get(name).copied() } else { state.unknown.get(name).copied() };
        let failures = previous.map_or(0, |b| self.current(b, now_ms)).saturating_add(1);
        let b = Backoff { failures, last_ms: now_ms };
        if known {
            // Bounded by the number of accounts; forgotten entries are dropped on the way.
            if state.known.len() > 1024 {
                let window = self.window_ms;
                state.known.retain(|_, b| now_ms.saturating_sub(b.last_ms) < window);
            }
            state.known.insert(name.to_owned(), b);
        } else {
            state.unknown.insert(name.to_owned(), b);
        }
        let w = match state.clients.get(client) {
            Some(w) if now_ms.saturating_sub(w.start_ms) < self.window_ms => {
                Window { start_ms: w.start_ms, failures: w.failures.saturating_add(1) }
            }
            _ => Window { start_ms: now_ms, failures: 1 },
        };
        state.clients.insert(client.to_owned(), w);
    }

    /// Forgets an account's failures after its owner logged in.
    pub fn succeed(&self, name: &str) {
        self.locked().known.remove(name);
    }
}

/// The real client's address of a request that came from `peer`: the peer itself, unless it is
/// one of the `trusted` proxies; then the right-most address of `X-Forwarded-For` that is not
/// a trusted proxy (addresses further left were written by the client and prove nothing).
/// IPv6 addresses are cut to their /64.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: &[&str],
    trusted: &[ipnet::IpNet],
) -> String {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer;
    if peer.as_ref().is_some_and(is_trusted) {
        let hops = forwarded_for.iter().flat_map(|v| v.split(',')).map(str::trim).rev();
        for hop in hops {
            let Ok(ip) = hop.parse::<IpAddr>() else { break };
            client = Some(ip);
            if !is_trusted(&ip) {
                break;
            }
        }
    }
    match client {
        Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_default(),
        Some(ip) => ip.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_delayed_never_locked_and_the_delay_is_capped() {
        let t = LoginThrottle::new(3, 900, 60);
        let mut now = 1_000_000;
        for _ in 0..3 {
            assert!(t.check("alice", true, "a", now).is_ok());
            t.fail("alice", true, "a", now);
        }
        assert_eq!(t.check("alice", true, "b", now), Err(1), "a delay from anywhere");
        assert!(t.check("alice", true, "b", now + 1000).is_ok());
        // Many more failures, each after its delay: the delay doubles up to its cap.
        let mut waits = Vec::new();
        for _ in 0..10 {
            while let Err(s) = t.check("alice", true, "c", now) {
                waits.push(s);
                now += s * 1000;
            }
            t.fail("alice", true, "c", now);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60], "{waits:?}");
        assert_eq!(t.check("alice", true, "d", now), Err(60), "never more than the cap");
        assert!(t.check("bob", true, "d", now).is_ok(), "other accounts are free");
        t.succeed("alice");
        assert!(t.check("alice", true, "d", now).is_ok(), "the owner's login forgets");
    }

    #[test]
    fn a_client_is_limited_per_window_and_spraying_names_forgets_no_account() {
        let t = LoginThrottle::new(5, 900, 60);
        let now = 5_000_000;
        for _ in 0..5 {
            t.fail("alice", true, "victim-net", now);
        }
        // One client sprays more unknown names than are remembered: it is limited after 50,
        // and alice's delay is kept all along.
        for i in 0..UNKNOWN_NAMES + 10 {
            let client = format!("sprayer-{}", i / 40);
            if t.check(&format!("name{i}"), false, &client, now).is_ok() {
                t.fail(&format!("name{i}"), false, &client, now);
            }
        }
        assert_eq!(t.check("x", false, "sprayer-0", now), Ok(()), "40 failures are allowed");
        for i in 0..10 {
            t.fail(&format!("y{i}"), false, "sprayer-0", now);
        }
        assert_eq!(t.check("z", false, "sprayer-0", now), Err(900), "50 are the limit");
        assert_eq!(t.check("alice", true, "elsewhere", now), Err(1), "alice was not forgotten");
        assert!(t.check("z", false, "sprayer-0", now + 900_000).is_ok(), "the window passed");
    }

    #[test]
    fn the_client_is_taken_from_x_forwarded_for_only_behind_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let check = |p: &str, xff: &[&str], expected: &str| {
            assert_eq!(client_address(peer(p), xff, &trusted), expected, "{p} {xff:?}");
        };
        check("203.0.113.5", &["198.51.100.1"], "203.0.113.5");
        check("10.1.2.3", &["198.51.100.1"], "198.51.100.1");
        check("10.1.2.3", &["1.1.1.1, 198.51.100.1, 10.9.9.9"], "198.51.100.1");
        check("10.1.2.3", &["1.1.1.1", "198.51.100.1"], "198.51.100.1");
        check("10.1.2.3", &[], "10.1.2.3");
        check("10.1.2.3", &["garbage, 10.2.2.2"], "10.2.2.2");
        check("2001:db8:1:2:3:4:5:6", &[], "2001:db8:1:2::/64");
        check("::ffff:192.0.2.1", &[], "192.0.2.1");
        assert_eq!(client_address(None, &[], &trusted), "");
    }
}
