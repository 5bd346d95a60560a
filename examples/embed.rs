//! Embedding portico as a library: register an in-process handler of your own next to
//! the built-ins, and run the gateway with a configuration that routes to it.
//!
//! ```sh
//! cargo run --example embed            # then: curl http://127.0.0.1:8081/hello/world
//! ```

use std::process::ExitCode;

use portico::backend::{Handler, HandlerFuture, Registry, RouteMatch};
use portico::model::{Request, Response};

/// Greets whoever the rest of the path names.
struct Hello;

impl Handler for Hello {
    fn call(&self, req: Request, m: RouteMatch) -> HandlerFuture {
        Box::pin(async move {
            let who = req.path.get(m.base.len()..).unwrap_or_default();
            let who = String::from_utf8_lossy(who.strip_prefix(b"/").unwrap_or(who)).into_owned();
            let who = if who.is_empty() {
                "world".to_owned()
            } else {
                who
            };
            Ok(Response::text(
                http::StatusCode::OK,
                format!("hello, {who}\n"),
            ))
        })
    }
}

const CONFIG: &str = r#"
[[listen]]
address = "127.0.0.1:8081"

[[route]]
prefix = "/hello"
handler = "hello"

[[route]]
prefix = "/status"
handler = "status"
"#;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut registry = Registry::new();
    registry.register("hello", Hello);

    // The same loading as `portico serve --config`, from a file written here.
    let dir = std::env::temp_dir().join(format!("portico-embed-{}", std::process::id()));
    let file = dir.join("embed.toml");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, CONFIG)) {
        eprintln!("embed: {e}");
        return ExitCode::FAILURE;
    }
    let sources = portico::config::Sources {
        file: Some(file),
        env: true,
        overrides: Vec::new(),
        listen: std::env::args().nth(1),
    };
    let config = match portico::config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("embed: {e}");
            return ExitCode::from(2);
        }
    };
    match portico::rt::block_on(portico::server::run(config, &registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}
