//! courier-client-harness: the worker processes courier-client's tests run and kill, the
//! scenarios that check what happened to every message, and the benchmark driver.
//!
//!   courier-client-harness worker    --conninfo S --queue Q --name N [options]
//!   courier-client-harness scenarios --conninfo S --bin-dir DIR --restart-cmd CMD [--only a,b]
//!   courier-client-harness bench     --conninfo S --queue Q --concurrency N --batch B --messages M

mod args;
mod bench;
mod scenarios;
mod worker;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(command) = argv.next() else {
        eprintln!("usage: courier-client-harness worker|scenarios|bench [options]");
        return ExitCode::from(2);
    };
    let args = match args::Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match command.as_str() {
            "worker" => worker::main(args).await,
            "scenarios" => scenarios::main(args).await,
            "bench" => bench::main(args).await,
            other => Err(format!("unknown command {other}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
