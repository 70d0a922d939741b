//! The demo's simulated observers: the real core on each of a few simulated phones (capture,
//! offline store, enrollment and sync). Only with the `demo` feature (the core's `sync`).

use std::path::Path;
use std::sync::Arc;

use hattama_core::election::Election;
use hattama_core::evidence::{EvidenceKind, Page};
use hattama_core::{CaptureRequest, Client, ClientConfig, StoreKey};

use super::{DemoError, Observed, Options, photo, true_figures};
use crate::storage::Storage;

/// Simulated observers photograph the protocols of `coverage_pct` of the precincts (some
/// protocols on two pages, some with the observer's own transcription) with the real core, then
/// enroll with one-time codes and sync to the server at `url`. Returns what they captured.
pub fn observe(
    storage: &dyn Storage,
    election: &Election,
    url: &str,
    work: &Path,
    options: &Options,
) -> Result<Vec<Observed>, DemoError> {
    let truth = Arc::new(true_figures(election));
    let covered: Vec<(usize, String)> = election
        .precincts
        .iter()
        .enumerate()
        .filter(|(i, _)| (i * 37 % 100) < options.coverage_pct)
        .map(|(i, p)| (i, p.id.clone()))
        .collect();
    let devices = options.devices.clamp(1, covered.len().max(1));
    let mut jobs = Vec::new();
    for d in 0..devices {
        let mine: Vec<(usize, String)> =
            covered.iter().filter(|(i, _)| i % devices == d).cloned().collect();
        if mine.is_empty() {
            continue;
        }
        let ids: Vec<String> = mine.iter().map(|(_, p)| p.clone()).collect();
        let code = storage
            .create_invites(&election.id, &ids, 1, hattama_core::now_ms())?
            .pop()
            .unwrap_or_default();
        jobs.push((d, code, mine));
    }
    let threads = 4.min(jobs.len().max(1));
    let queue = Arc::new(std::sync::Mutex::new(jobs));
    let election = Arc::new(election.clone());
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (queue, election, truth) = (queue.clone(), election.clone(), truth.clone());
        let (url, work, width) = (url.to_owned(), work.to_owned(), options.photo_width);
        handles.push(std::thread::spawn(move || -> Result<Vec<Observed>, DemoError> {
            let mut out = Vec::new();
            loop {
                let job = queue.lock().map_err(|e| DemoError::Observer(e.to_string()))?.pop();
                let Some((d, code, mine)) = job else { return Ok(out) };
                // A simulated phone keeps its store key only in memory, as the app does in
                // the platform's key store.
                let client = Client::open(
                    &work.join(format!("observer-{d:03}")),
                    &StoreKey::generate(),
                    ClientConfig::default(),
                )?;
                client.enroll(&url, &code)?;
                for (i, precinct) in mine {
                    let values = truth.get(&precinct).cloned().unwrap_or_default();
                    let number = election.precinct(&precinct).map_or(0, |p| p.number);
                    let pages = if i % 5 == 0 { 2 } else { 1 };
                    for page in 1..=pages {
                        let sheet = photo::Sheet {
                            title: &election.names.en,
                            precinct_number: number,
                            template: &election.protocol,
                            values: &values,
                            page: (page, pages),
                        };
                        let jpeg = photo::protocol_photo(&sheet, width, width * 4 / 3, i as u64);
                        let captured = client.capture(
                            &jpeg,
                            &CaptureRequest {
                                election: election.id.clone(),
                                precinct: precinct.clone(),
                                kind: EvidenceKind::Posted,
                                page: Page { count: pages, number: page },
                                note: (i % 7 == 0).then(|| "Posted at the entrance.".to_owned()),
                                transcription: (i % 3 == 0 && page == 1).then(|| values.clone()),
                                location: None,
                                utc_offset_min: 300,
                            },
                        )?;
                        out.push(Observed {
                            precinct: precinct.clone(),
                            capture: captured.id.to_hex(),
                            values: values.clone(),
                        });
                    }
                }
                let cancel = hattama_core::sync::CancelToken::new();
                client.sync(&hattama_core::sync::NoProgress, &cancel)?;
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let part = h.join().map_err(|_| DemoError::Observer("thread panicked".into()))??;
        all.extend(part);
    }
    all.sort_by(|a, b| a.precinct.cmp(&b.precinct).then_with(|| a.capture.cmp(&b.capture)));
    Ok(all)
}
