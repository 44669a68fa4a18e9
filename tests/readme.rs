//! The README's command blocks, run the way a newcomer runs them: every `sh` block in README
//! order, in one shell (variables such as `TOKEN` carry over from block to block, as in one
//! terminal), against the real `veto` and Envoy, inside a network namespace of its own
//! (`unshare --net`), so the README's fixed ports (9191, 9192, 10000, 9901, 8080) can collide
//! with nothing on the machine.
//!
//! A block's kind is an HTML comment on the line before its fence (GitHub does not show it):
//! - none: run in the walkthrough shell;
//! - `<!-- readme-test: servers -->`: each command runs in the background, as in a terminal
//!   of its own, and the shell waits until the demo's servers answer;
//! - `<!-- readme-test: syntax-only: WHY -->`: parsed with `bash -n`, and every repository
//!   file it names must exist; WHY says why it cannot run here (it needs a cluster, it is the
//!   test command itself, it takes minutes).
//!
//! What a block promises, read from the README's own comments:
//! - every command exits 0;
//! - a trailing comment that starts with an HTTP status (`# 401 ...`) is the status of the
//!   last HTTP answer that command got;
//! - a comment line of JSON after a command (`# {"decision":"deny",...}`): each
//!   `"key":"value"` pair in it appears in the command's output.
//!
//! `cargo run [-q] --release --` is replaced by the `veto` binary under test: a release
//! build inside the test suite would take minutes, and what cargo does is cargo's to test.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{copy_tree, envoy_binary, wait_or_kill};

/// The whole walkthrough: a few seconds of work, with room for a loaded CI machine.
const WALKTHROUGH_TIMEOUT: Duration = Duration::from_secs(120);

/// What the servers block starts, and the URL that answers 2xx once each is up.
const DEMO_SERVERS: [&str; 3] = [
    "http://127.0.0.1:9192/readyz", // veto
    "http://127.0.0.1:8080/",       // the demo app
    "http://127.0.0.1:9901/ready",  // Envoy
];

#[derive(Debug, PartialEq)]
enum Kind {
    Walkthrough,
    Servers,
    SyntaxOnly,
}

struct Block {
    /// README line of the opening fence, for messages.
    line: usize,
    kind: Kind,
    text: String,
}

/// One command as the shell sees it: continuation lines, a heredoc or a function body
/// belong to the command they continue.
struct ShellCommand {
    line: usize,
    text: String,
    /// The HTTP status its trailing comment promises.
    status: Option<u16>,
    /// `"key":"value"` pairs its output must hold.
    json_pairs: Vec<String>,
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let blocks = readme_blocks();
    let demo = DemoDir::new();
    let mut script = String::from(DRIVER_PRELUDE);
    let mut commands = Vec::new();
    for block in blocks.iter().filter(|b| b.kind != Kind::SyntaxOnly) {
        let block_commands = shell_commands(block);
        assert!(
            !block_commands.is_empty(),
            "README.md:{}: an empty sh block",
            block.line
        );
        for command in block_commands {
            let text = with_veto_under_test(&command.text);
            if block.kind == Kind::Servers {
                let log = format!("server-{}.log", command.line);
                script.push_str(&format!("(\n{text}) >{log} 2>&1 &\n"));
            } else {
                let n = commands.len();
                script.push_str(&format!("echo '@command {n}'\n{text}echo \"@exit $?\"\n"));
                commands.push(command);
            }
        }
        if block.kind == Kind::Servers {
            for url in DEMO_SERVERS {
                script.push_str(&format!("wait_for {url}\n"));
            }
        }
    }
    fs::write(demo.path().join("readme-walkthrough.sh"), &script).expect("write the driver");

    let output = demo.run_in_own_network("bash readme-walkthrough.sh");
    let mut outputs = output.split("@command ").skip(1);
    for (n, command) in commands.iter().enumerate() {
        let section = outputs.next().unwrap_or_else(|| {
            panic!(
                "README.md:{}: the walkthrough stopped before `{}`\n{output}{}",
                command.line,
                command.text.trim(),
                demo.server_logs()
            )
        });
        let fail = |what: String| -> ! {
            panic!(
                "README.md:{}: {what}\ncommand:\n{}\noutput:\n{section}\n\
                 the walkthrough so far:\n{script}{}",
                command.line,
                command.text.trim_end(),
                demo.server_logs()
            )
        };
        let section = section
            .strip_prefix(&format!("{n}\n"))
            .unwrap_or_else(|| fail("the walkthrough's output is out of order".into()));
        let exit = section
            .lines()
            .filter_map(|l| l.strip_prefix("@exit "))
            .next_back();
        if exit != Some("0") {
            fail(format!("the command exited with {exit:?}, not 0"));
        }
        let statuses: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("@status "))
            .collect();
        if let Some(expected) = command.status
            && statuses.last() != Some(&expected.to_string().as_str())
        {
            fail(format!(
                "its comment promises HTTP {expected}; the answers were {statuses:?}"
            ));
        }
        for pair in &command.json_pairs {
            if !section.contains(pair.as_str()) {
                fail(format!(
                    "the comment after it promises {pair} in the output"
                ));
            }
        }
    }
    assert!(
        outputs.next().is_none(),
        "the walkthrough ran more commands than the README has"
    );
}

#[test]
fn the_readme_blocks_that_cannot_run_here_parse_and_name_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let syntax_only: Vec<Block> = readme_blocks()
        .into_iter()
        .filter(|b| b.kind == Kind::SyntaxOnly)
        .collect();
    assert!(!syntax_only.is_empty(), "the README has such blocks");
    for block in syntax_only {
        let checked = Command::new("bash")
            .args(["-n", "-c", &block.text])
            .output()
            .expect("run bash -n");
        assert!(
            checked.status.success(),
            "README.md:{}: bash -n refuses the block: {}",
            block.line,
            String::from_utf8_lossy(&checked.stderr)
        );
        for word in block
            .text
            .lines()
            .flat_map(|l| code_part(l).split_whitespace())
        {
            let word = word
                .trim_start_matches("./")
                .trim_end_matches([';', ')', '"']);
            let in_repo = ["k8s/", "examples/", "envoy/", "bench/", "scripts/", "src/"]
                .iter()
                .any(|dir| word.starts_with(dir));
            if in_repo {
                assert!(
                    root.join(word).exists(),
                    "README.md:{}: the block names {word}, which the repository does not have",
                    block.line
                );
            }
        }
    }
}

/// The shell the walkthrough runs in: `curl` reports each answer's status (its output is
/// otherwise unchanged), and the servers of a `servers` block are awaited, then stopped
/// when the walkthrough ends.
const DRIVER_PRELUDE: &str = r#"# Generated by tests/readme.rs from README.md's sh blocks.
export PATH="$PWD/.bin:$PATH"
curl() { command curl -sS -w '\n@status %{http_code}\n' "$@"; }
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
wait_for() {
  for _ in $(seq 300); do
    command curl -sf -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  echo "@timeout: $1 did not answer 2xx within 30 s"
  exit 1
}
"#;

/// Replaces the README's `cargo run` with the binary under test (see the module doc).
fn with_veto_under_test(text: &str) -> String {
    let veto = env!("CARGO_BIN_EXE_veto");
    text.replace("cargo run -q --release --", veto)
        .replace("cargo run --release --", veto)
}

fn readme_blocks() -> Vec<Block> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = fs::read_to_string(&path).expect("read README.md");
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - trimmed.len();
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("README.md:{}: a fence that is never closed", i + 1));
        if matches!(info.trim(), "bash" | "shell" | "console") {
            panic!(
                "README.md:{}: mark shell blocks `sh`, so this test runs them",
                i + 1
            );
        }
        if info.trim() == "sh" {
            let text = lines[i + 1..end]
                .iter()
                .map(|l| format!("{}\n", l.get(indent..).unwrap_or("").trim_end()))
                .collect();
            let marker = i.checked_sub(1).map_or("", |m| lines[m].trim());
            blocks.push(Block {
                line: i + 1,
                kind: kind(marker, i + 1),
                text,
            });
        }
        i = end + 1;
    }
    assert!(blocks.len() >= 5, "README.md has its walkthrough blocks");
    blocks
}

fn kind(marker: &str, line: usize) -> Kind {
    let Some(marker) = marker
        .strip_prefix("<!-- readme-test:")
        .and_then(|m| m.strip_suffix("-->"))
    else {
        return Kind::Walkthrough;
    };
    match marker.trim() {
        "servers" => Kind::Servers,
        m if m.starts_with("syntax-only:") && m.len() > "syntax-only:".len() + 5 => {
            Kind::SyntaxOnly
        }
        other => {
            panic!("README.md:{line}: unknown marker `{other}` (servers, or syntax-only: WHY)")
        }
    }
}

fn shell_commands(block: &Block) -> Vec<ShellCommand> {
    let lines: Vec<&str> = block.text.lines().collect();
    let mut commands: Vec<ShellCommand> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim();
        if trimmed.is_empty() {
            i += 1;
            continue;
        }
        if trimmed.starts_with('#') {
            if let Some(previous) = commands.last_mut() {
                previous.json_pairs.extend(json_pairs(trimmed));
            }
            i += 1;
            continue;
        }
        let first = i;
        let heredoc = heredoc_delimiter(lines[i]);
        let opens_body = code_part(lines[i]).trim_end().ends_with('{');
        // The line whose trailing comment speaks for the command: the first of a heredoc
        // (the rest is data), else the last.
        let mut comment_line = lines[i];
        i += 1;
        if let Some(delimiter) = heredoc {
            while i < lines.len() && lines[i].trim() != delimiter {
                i += 1;
            }
            i += 1;
        } else if opens_body {
            while i < lines.len() && lines[i].trim() != "}" {
                i += 1;
            }
            i += 1;
        } else {
            while code_part(comment_line).trim_end().ends_with('\\') && i < lines.len() {
                comment_line = lines[i];
                i += 1;
            }
        }
        let text: String = lines[first..i.min(lines.len())]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        commands.push(ShellCommand {
            line: block.line + 1 + first,
            text,
            status: promised_status(comment_line),
            json_pairs: Vec::new(),
        });
    }
    commands
}

/// `EOF` of `cat > f <<'EOF'` (or `<<EOF`, `<<"EOF"`); `None` for `<<<` here-strings.
fn heredoc_delimiter(line: &str) -> Option<String> {
    let code = code_part(line);
    let at = code.find("<<")?;
    let rest = &code[at + 2..];
    if rest.starts_with('<') {
        return None;
    }
    let word = rest.trim_start_matches('-').split_whitespace().next()?;
    Some(word.trim_matches(['\'', '"']).to_owned())
}

/// The HTTP status at the start of a line's trailing comment (`# 201`, `# 404: absent`).
fn promised_status(line: &str) -> Option<u16> {
    let comment = line[code_part(line).len()..].trim_start_matches('#').trim();
    let digits: String = comment.chars().take_while(char::is_ascii_digit).collect();
    (digits.len() == 3).then(|| digits.parse().expect("three digits"))
}

/// Every `"key":"value"` pair in a JSON-looking comment; placeholders such as `"iss":...`
/// or `"version":N` are not pairs and promise nothing.
fn json_pairs(comment: &str) -> Vec<String> {
    let Some(json) = comment.trim_start_matches('#').trim().strip_prefix('{') else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find("\":\"") {
        let key = rest[..at].rsplit('"').next().unwrap_or("");
        let value_and_more = &rest[at + 3..];
        let Some(end) = value_and_more.find('"') else {
            break;
        };
        let value = &value_and_more[..end];
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            pairs.push(format!("\"{key}\":\"{value}\""));
        }
        rest = &value_and_more[end + 1..];
    }
    pairs
}

/// A line up to its comment: a `#` outside quotes that starts a word.
fn code_part(line: &str) -> &str {
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && !single {
            escaped = true;
        } else if c == '\'' && !double {
            single = !single;
        } else if c == '"' && !single {
            double = !double;
        } else if c == '#' && !single && !double && previous.is_whitespace() {
            return &line[..at];
        }
        previous = c;
    }
    line
}

/// The parts of the repository the README's commands read.
const DEMO_TREES: [&str; 3] = ["examples", "envoy", "k8s"];

/// A copy of what the walkthrough touches ([`DEMO_TREES`], Envoy as `.venv/bin/envoy`, and
/// `veto` on the PATH),
/// committed to a git repository of its own, since the walkthrough restores a file with
/// `git checkout`.
struct DemoDir {
    dir: tempfile::TempDir,
}

impl DemoDir {
    fn new() -> DemoDir {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::Builder::new()
            .prefix("veto-readme-")
            .tempdir()
            .expect("a temp dir for the walkthrough");
        for top in DEMO_TREES {
            copy_tree(&root.join(top), &dir.path().join(top));
        }
        let venv_bin = dir.path().join(".venv/bin");
        fs::create_dir_all(&venv_bin).expect("create .venv/bin");
        std::os::unix::fs::symlink(envoy_binary(), venv_bin.join("envoy")).expect("link Envoy");
        // `veto` on the PATH, as `cargo install --path .` puts it (the README says so).
        let bin = dir.path().join(".bin");
        fs::create_dir_all(&bin).expect("create .bin");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_veto"), bin.join("veto"))
            .expect("link veto");
        let git = |args: &[&str]| {
            let status = Command::new("git")
                .args(["-c", "user.name=readme", "-c", "user.email=readme@test"])
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .status()
                .expect("run git");
            assert!(status.success(), "git {args:?} in the walkthrough's copy");
        };
        git(&["init", "-q"]);
        git(&["add", "examples", "envoy", "k8s"]);
        git(&["commit", "-q", "-m", "the README walkthrough's copy"]);
        DemoDir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `script` with bash in this directory, in a new network namespace (its own
    /// loopback) and a new PID namespace, so every server the walkthrough starts dies with
    /// it, whatever happens. Returns stdout and stderr together.
    fn run_in_own_network(&self, script: &str) -> String {
        let output_path = self.path().join("walkthrough.out");
        let output = File::create(&output_path).expect("create the output file");
        let mut child = Command::new("unshare")
            .args(["--net", "--pid", "--fork", "--kill-child", "--"])
            .args(["bash", "-c", &format!("ip link set lo up && {script}")])
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone the output file"))
            .stderr(output)
            .spawn()
            .expect("run unshare (util-linux; needs root): the README test needs its own network");
        let status = wait_or_kill(&mut child, WALKTHROUGH_TIMEOUT);
        let output = fs::read_to_string(&output_path).unwrap_or_default();
        match status {
            Some(status) if status.success() => output,
            Some(status) => panic!(
                "the walkthrough failed ({status})\n{output}{}",
                self.server_logs()
            ),
            None => panic!(
                "the walkthrough had not ended after {WALKTHROUGH_TIMEOUT:?}\n{output}{}",
                self.server_logs()
            ),
        }
    }

    /// What the servers of the walkthrough printed, for failure messages.
    fn server_logs(&self) -> String {
        let mut logs: Vec<PathBuf> = fs::read_dir(self.path())
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        logs.iter()
            .map(|p| {
                let text = fs::read_to_string(p).unwrap_or_default();
                format!("\n--- {} ---\n{text}", p.display())
            })
            .collect()
    }
}
