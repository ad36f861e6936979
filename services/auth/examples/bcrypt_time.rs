//! Prints the mean time of one bcrypt hash at a cost, the reference the login benchmark is
//! compared with: `cargo run --release --example bcrypt_time -- 10 20` (cost, rounds).

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let cost: u32 = args.next().map_or(Ok(12), |a| a.parse())?;
    let rounds: u32 = args.next().map_or(Ok(20), |a| a.parse())?;
    bcrypt::hash("warm-up-password", cost)?;
    let started = Instant::now();
    for _ in 0..rounds {
        bcrypt::hash("benchmark-password", cost)?;
    }
    let per_hash = started.elapsed().as_secs_f64() / f64::from(rounds);
    println!("{:.3}", per_hash * 1000.0);
    Ok(())
}
