//! A local GitHub API stand-in for the load benchmark's cached `/authenticate` run: the test
//! suite's mock (tests/common/github_mock.rs) with one user, `octocat`, an active member of
//! `acme` (team `sre`) whose token is TOKEN. Plain HTTP on 127.0.0.1; nothing leaves the machine.
//!
//!     github_mock TOKEN                # prints "github mock at http://127.0.0.1:PORT/"

#[path = "../tests/common/github_mock.rs"]
mod github_mock;

use github_mock::{MockGithub, MockUser};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(token) = std::env::args().nth(1) else {
        eprintln!("usage: github_mock TOKEN");
        std::process::exit(2);
    };
    let mock = MockGithub::start().await;
    mock.add(
        &token,
        MockUser::new("octocat", 583231)
            .member("acme", "active")
            .team("acme", "sre", "Site Reliability"),
    );
    println!("github mock at {}", mock.url());
    // Serves until killed (the load script stops it).
    let _ = tokio::signal::ctrl_c().await;
}
