//! `stackctl completions <shell>`: a completion script on stdout.

use clap::CommandFactory;
use clap_complete::Shell;

/// Print a shell completion script, e.g. `stackctl completions bash > /etc/bash_completion.d/stackctl`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl completions bash > /etc/bash_completion.d/stackctl\n  stackctl completions zsh > ~/.zfunc/_stackctl"
)]
pub struct Args {
    shell: Shell,
}

pub fn run<C: CommandFactory>(args: Args) {
    let mut cmd = C::command();
    clap_complete::generate(args.shell, &mut cmd, "stackctl", &mut std::io::stdout());
}
