//! The binding to libmodsecurity 3's C API: the few functions the layer calls, declared by
//! hand from `modsecurity/{modsecurity,rules_set,transaction,intervention}.h` (stable since
//! 3.0.0), and safe types around them. This is the crate's only `unsafe` code.
//!
//! Threading, as libmodsecurity allows it: one `ModSecurity` per process, created once and
//! never freed; rule parsing (and freeing a rule set) is not reentrant, so it is serialised
//! by [`PARSE`], which only rule loading takes; transactions over one shared rule set run
//! concurrently on any threads, each used by one thread at a time.

#![allow(unsafe_code)]
// Without the library only the safe stand-ins below are compiled.
#![cfg_attr(towergate_waf_no_lib, allow(unused_imports, dead_code))]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock};

#[cfg(not(towergate_waf_no_lib))]
mod sys {
    use std::ffi::{c_char, c_int, c_uchar, c_void};

    #[repr(C)]
    pub struct ModSecurity {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct RulesSet {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct Transaction {
        _private: [u8; 0],
    }
    /// `ModSecurityIntervention` (intervention.h).
    #[repr(C)]
    pub struct Intervention {
        pub status: c_int,
        pub pause: c_int,
        pub url: *mut c_char,
        pub log: *mut c_char,
        pub disruptive: c_int,
    }
    pub type LogCb = Option<unsafe extern "C" fn(data: *mut c_void, msg: *const c_void)>;

    #[link(name = "modsecurity")]
    unsafe extern "C" {
        pub fn msc_init() -> *mut ModSecurity;
        pub fn msc_who_am_i(msc: *mut ModSecurity) -> *const c_char;
        pub fn msc_set_connector_info(msc: *mut ModSecurity, connector: *const c_char);
        pub fn msc_set_log_cb(msc: *mut ModSecurity, cb: LogCb);

        pub fn msc_create_rules_set() -> *mut RulesSet;
        pub fn msc_rules_add_file(
            rules: *mut RulesSet,
            file: *const c_char,
            error: *mut *const c_char,
        ) -> c_int;
        pub fn msc_rules_add(
            rules: *mut RulesSet,
            plain_rules: *const c_char,
            error: *mut *const c_char,
        ) -> c_int;
        pub fn msc_rules_cleanup(rules: *mut RulesSet) -> c_int;

        pub fn msc_new_transaction_with_id(
            msc: *mut ModSecurity,
            rules: *mut RulesSet,
            id: *mut c_char,
            log_cb_data: *mut c_void,
        ) -> *mut Transaction;
        pub fn msc_process_connection(
            t: *mut Transaction,
            client: *const c_char,
            c_port: c_int,
            server: *const c_char,
            s_port: c_int,
        ) -> c_int;
        pub fn msc_process_uri(
            t: *mut Transaction,
            uri: *const c_char,
            method: *const c_char,
            http_version: *const c_char,
        ) -> c_int;
        pub fn msc_add_n_request_header(
            t: *mut Transaction,
            key: *const c_uchar,
            key_len: usize,
            value: *const c_uchar,
            value_len: usize,
        ) -> c_int;
        pub fn msc_process_request_headers(t: *mut Transaction) -> c_int;
        pub fn msc_append_request_body(
            t: *mut Transaction,
            body: *const c_uchar,
            len: usize,
        ) -> c_int;
        pub fn msc_process_request_body(t: *mut Transaction) -> c_int;
        pub fn msc_append_response_body(
            t: *mut Transaction,
            body: *const c_uchar,
            len: usize,
        ) -> c_int;
        pub fn msc_process_response_body(t: *mut Transaction) -> c_int;
        pub fn msc_add_n_response_header(
            t: *mut Transaction,
            key: *const c_uchar,
            key_len: usize,
            value: *const c_uchar,
            value_len: usize,
        ) -> c_int;
        pub fn msc_process_response_headers(
            t: *mut Transaction,
            code: c_int,
            protocol: *const c_char,
        ) -> c_int;
        pub fn msc_intervention(t: *mut Transaction, it: *mut Intervention) -> c_int;
        pub fn msc_process_logging(t: *mut Transaction) -> c_int;
        pub fn msc_update_status_code(t: *mut Transaction, status: c_int) -> c_int;
        pub fn msc_transaction_cleanup(t: *mut Transaction);
    }

    unsafe extern "C" {
        /// libc's `free`: libmodsecurity hands out `strdup`ed strings (rule errors, the
        /// intervention's `url` and `log`); 3.0.9 has no function of its own to free them.
        pub fn free(p: *mut c_void);
    }
}

/// Serialises rule parsing and rule-set cleanup (libmodsecurity's parser is not reentrant).
/// Taken only while rules load or a rule set is dropped, never per request.
static PARSE: Mutex<()> = Mutex::new(());

/// Why the library is not usable in this build.
#[cfg(towergate_waf_no_lib)]
pub(crate) const NO_LIB: &str = "towergate-waf was built without libmodsecurity (pkg-config found no `modsecurity`); install libmodsecurity-dev (Debian, Ubuntu) or libmodsecurity-devel and rebuild";

/// Whether this build can load rules at all.
pub(crate) const AVAILABLE: bool = cfg!(not(towergate_waf_no_lib));

/// The process's ModSecurity instance (libmodsecurity keeps global state; one is the rule).
#[cfg(not(towergate_waf_no_lib))]
struct Msc(*mut sys::ModSecurity);
// SAFETY: the instance is created once, never freed, and libmodsecurity only reads it while
// transactions run; its setters are called once, before it is shared.
#[cfg(not(towergate_waf_no_lib))]
unsafe impl Send for Msc {}
#[cfg(not(towergate_waf_no_lib))]
unsafe impl Sync for Msc {}

#[cfg(not(towergate_waf_no_lib))]
fn msc() -> *mut sys::ModSecurity {
    static MSC: OnceLock<Msc> = OnceLock::new();
    MSC.get_or_init(|| {
        // SAFETY: plain constructor and setters on the new instance, before it is shared.
        unsafe {
            let msc = sys::msc_init();
            assert!(!msc.is_null(), "msc_init failed (out of memory)");
            let info = concat!("towergate-waf/", env!("CARGO_PKG_VERSION"), "\0");
            sys::msc_set_connector_info(msc, info.as_ptr().cast());
            sys::msc_set_log_cb(msc, Some(log_cb));
            Msc(msc)
        }
    })
    .0
}

/// libmodsecurity's version, e.g. `ModSecurity v3.0.9 (Linux)`.
pub fn version() -> String {
    #[cfg(not(towergate_waf_no_lib))]
    {
        // SAFETY: returns a pointer to a string the instance owns, valid for its lifetime.
        let s = unsafe { CStr::from_ptr(sys::msc_who_am_i(msc())) };
        s.to_string_lossy().into_owned()
    }
    #[cfg(towergate_waf_no_lib)]
    {
        String::from("none (built without libmodsecurity)")
    }
}

// === impl RuleSet ===

/// A compiled rule set, shared by every transaction that uses it.
pub(crate) struct RuleSet {
    #[cfg(not(towergate_waf_no_lib))]
    raw: *mut sys::RulesSet,
}

// SAFETY: after loading, libmodsecurity only reads a rule set while transactions run
// (ModSecurity-nginx shares one across threads the same way); loading takes `&mut`, and
// cleanup happens once, in `Drop`, under `PARSE`.
unsafe impl Send for RuleSet {}
unsafe impl Sync for RuleSet {}

impl RuleSet {
    /// An empty rule set.
    pub(crate) fn new() -> Result<Self, String> {
        #[cfg(not(towergate_waf_no_lib))]
        {
            let _ = msc();
            // SAFETY: plain constructor.
            let raw = unsafe { sys::msc_create_rules_set() };
            if raw.is_null() {
                return Err("msc_create_rules_set failed".into());
            }
            Ok(Self { raw })
        }
        #[cfg(towergate_waf_no_lib)]
        {
            Err(NO_LIB.into())
        }
    }

    /// Adds the rules in `file` (its `Include`s and data files resolve beside it).
    pub(crate) fn add_file(&mut self, file: &Path) -> Result<(), String> {
        let Some(s) = file.to_str() else {
            return Err("the file name is not valid UTF-8".into());
        };
        let c = CString::new(s).map_err(|_| "the file name contains a NUL byte".to_owned())?;
        #[cfg(not(towergate_waf_no_lib))]
        {
            self.add(|raw, err| unsafe { sys::msc_rules_add_file(raw, c.as_ptr(), err) })
        }
        #[cfg(towergate_waf_no_lib)]
        {
            let _ = c;
            Err(NO_LIB.into())
        }
    }

    /// Adds rules given as text.
    pub(crate) fn add_text(&mut self, rules: &str) -> Result<(), String> {
        let c = CString::new(rules).map_err(|_| "the rules contain a NUL byte".to_owned())?;
        #[cfg(not(towergate_waf_no_lib))]
        {
            self.add(|raw, err| unsafe { sys::msc_rules_add(raw, c.as_ptr(), err) })
        }
        #[cfg(towergate_waf_no_lib)]
        {
            let _ = c;
            Err(NO_LIB.into())
        }
    }

    #[cfg(not(towergate_waf_no_lib))]
    fn add(
        &mut self,
        f: impl FnOnce(*mut sys::RulesSet, *mut *const c_char) -> c_int,
    ) -> Result<(), String> {
        let _parse = PARSE.lock().unwrap_or_else(|e| e.into_inner());
        let mut error: *const c_char = ptr::null();
        let n = f(self.raw, &mut error);
        if n >= 0 {
            return Ok(());
        }
        if error.is_null() {
            return Err("the rules could not be loaded (no message from libmodsecurity)".into());
        }
        // SAFETY: on failure libmodsecurity sets `error` to a `strdup`ed message we own.
        let message = unsafe {
            let m = CStr::from_ptr(error).to_string_lossy().trim().to_owned();
            sys::free(error as *mut c_void);
            m
        };
        Err(message)
    }
}

impl Drop for RuleSet {
    fn drop(&mut self) {
        #[cfg(not(towergate_waf_no_lib))]
        {
            let _parse = PARSE.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: no transaction uses the set any more: each holds an `Arc` to it.
            unsafe { sys::msc_rules_cleanup(self.raw) };
        }
    }
}

// === impl Transaction ===

/// A rule that logged a message during a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleMatch {
    /// The rule's `id`.
    pub(crate) id: String,
    /// The rule's `msg`, or the start of the log line when it has none.
    pub(crate) msg: String,
}

/// Where libmodsecurity's log callback writes, one per transaction.
#[derive(Default)]
pub(crate) struct Sink {
    pub(crate) matches: Vec<RuleMatch>,
}

/// Most messages a transaction keeps (a request matching every CRS rule stays bounded).
const MAX_MATCHES: usize = 64;

/// Reads `[name "value"]` out of a ModSecurity log line.
pub(crate) fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = line;
    loop {
        let at = rest.find('[')?;
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix(name) {
            if let Some(value) = after.strip_prefix(" \"") {
                return value.find("\"]").map(|end| &value[..end]);
            }
        }
    }
}

/// Turns a log line into a [`RuleMatch`].
/// Control characters (a message can quote request data) become spaces, so that one
/// match stays one log line.
pub(crate) fn parse_match(line: &str) -> RuleMatch {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .take(max)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let id = clean(field(line, "id").unwrap_or(""), 32);
    let msg = clean(field(line, "msg").unwrap_or(line), 300);
    RuleMatch { id, msg }
}

#[cfg(not(towergate_waf_no_lib))]
unsafe extern "C" fn log_cb(data: *mut c_void, msg: *const c_void) {
    if data.is_null() || msg.is_null() {
        return;
    }
    // Never unwind into C: a panic here would abort the process.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `data` is the `Sink` its transaction registered and owns; libmodsecurity
        // calls back on the thread that is running that transaction; `msg` is a C string
        // (the text log property, which `msc_set_log_cb` selects).
        let sink = unsafe { &mut *(data as *mut Sink) };
        if sink.matches.len() >= MAX_MATCHES {
            return;
        }
        let text = unsafe { CStr::from_ptr(msg as *const c_char) };
        // Log lines quote request data, which can be any bytes.
        sink.matches.push(parse_match(&text.to_string_lossy()));
    });
}

/// A transaction id (`UNIQUE_ID`, the audit log's), unique within the process and across
/// restarts: the process's start time and a counter. Without one, libmodsecurity 3 draws
/// its own from `std::random_device` per transaction, which opens and reads the kernel's
/// random source each time (a system call or two per request).
#[cfg(not(towergate_waf_no_lib))]
fn unique_id(buf: &mut [u8; 48]) -> &CStr {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<u64> = OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{start:x}.{n}\0");
    CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c"0")
}

/// What a rule asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Intervention {
    pub(crate) status: u16,
    pub(crate) url: Option<String>,
    pub(crate) rule: Option<RuleMatch>,
}

/// One ModSecurity transaction: one request and its response.
pub(crate) struct Transaction {
    #[cfg(not(towergate_waf_no_lib))]
    raw: *mut sys::Transaction,
    sink: Box<Sink>,
    /// Keeps the rule set alive while the transaction uses it.
    _rules: Arc<RuleSet>,
}

// SAFETY: a transaction is not tied to a thread; `&mut self` on every call keeps it to one
// thread at a time, and the log callback only runs inside those calls.
unsafe impl Send for Transaction {}

/// A failed libmodsecurity call (it returned something other than 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallFailed(pub(crate) &'static str);

#[cfg(not(towergate_waf_no_lib))]
fn check(n: c_int, what: &'static str) -> Result<(), CallFailed> {
    if n == 1 {
        Ok(())
    } else {
        Err(CallFailed(what))
    }
}

impl Transaction {
    /// A new transaction over `rules`.
    pub(crate) fn new(rules: &Arc<RuleSet>) -> Self {
        let mut sink = Box::<Sink>::default();
        #[cfg(not(towergate_waf_no_lib))]
        {
            let data = &mut *sink as *mut Sink as *mut c_void;
            let mut id = [0u8; 48];
            let id = unique_id(&mut id);
            // SAFETY: the rule set outlives the transaction (we hold an `Arc`), and the
            // sink is boxed, so its address stays valid until the transaction is freed;
            // libmodsecurity copies the id (it only takes `char *` for historical reasons).
            let raw = unsafe {
                sys::msc_new_transaction_with_id(msc(), rules.raw, id.as_ptr().cast_mut(), data)
            };
            assert!(!raw.is_null(), "msc_new_transaction failed (out of memory)");
            Self {
                raw,
                sink,
                _rules: rules.clone(),
            }
        }
        #[cfg(towergate_waf_no_lib)]
        {
            sink.matches.clear();
            Self {
                sink,
                _rules: rules.clone(),
            }
        }
    }

    /// Messages logged so far (drained).
    pub(crate) fn take_matches(&mut self) -> Vec<RuleMatch> {
        std::mem::take(&mut self.sink.matches)
    }
}

#[cfg(not(towergate_waf_no_lib))]
impl Transaction {
    /// Phase 0: the connection's addresses.
    pub(crate) fn connection(
        &mut self,
        client: &CStr,
        client_port: u16,
        server: &CStr,
        server_port: u16,
    ) -> Result<(), CallFailed> {
        // SAFETY: valid C strings for the call's duration.
        let n = unsafe {
            sys::msc_process_connection(
                self.raw,
                client.as_ptr(),
                client_port.into(),
                server.as_ptr(),
                server_port.into(),
            )
        };
        check(n, "msc_process_connection")
    }

    /// The request line.
    pub(crate) fn uri(
        &mut self,
        uri: &CStr,
        method: &CStr,
        version: &CStr,
    ) -> Result<(), CallFailed> {
        // SAFETY: valid C strings for the call's duration (libmodsecurity copies them).
        let n = unsafe {
            sys::msc_process_uri(self.raw, uri.as_ptr(), method.as_ptr(), version.as_ptr())
        };
        check(n, "msc_process_uri")
    }

    /// One request header (any bytes; libmodsecurity copies them).
    pub(crate) fn request_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), CallFailed> {
        // SAFETY: pointer and length of live slices.
        let n = unsafe {
            sys::msc_add_n_request_header(
                self.raw,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        };
        check(n, "msc_add_n_request_header")
    }

    /// Phase 1.
    pub(crate) fn process_request_headers(&mut self) -> Result<(), CallFailed> {
        // SAFETY: valid transaction.
        check(
            unsafe { sys::msc_process_request_headers(self.raw) },
            "msc_process_request_headers",
        )
    }

    /// Part of the request body (libmodsecurity copies it).
    pub(crate) fn append_request_body(&mut self, chunk: &[u8]) -> Result<(), CallFailed> {
        // SAFETY: pointer and length of a live slice.
        let n = unsafe { sys::msc_append_request_body(self.raw, chunk.as_ptr(), chunk.len()) };
        check(n, "msc_append_request_body")
    }

    /// Phase 2 (also for requests without a body: most CRS rules are phase 2).
    pub(crate) fn process_request_body(&mut self) -> Result<(), CallFailed> {
        // SAFETY: valid transaction.
        check(
            unsafe { sys::msc_process_request_body(self.raw) },
            "msc_process_request_body",
        )
    }

    /// Part of the response body, for phase 4.
    pub(crate) fn append_response_body(&mut self, chunk: &[u8]) -> Result<(), CallFailed> {
        // SAFETY: pointer and length of a live slice.
        let n = unsafe { sys::msc_append_response_body(self.raw, chunk.as_ptr(), chunk.len()) };
        check(n, "msc_append_response_body")
    }

    /// Phase 4: the response body.
    pub(crate) fn process_response_body(&mut self) -> Result<(), CallFailed> {
        // SAFETY: valid transaction.
        check(
            unsafe { sys::msc_process_response_body(self.raw) },
            "msc_process_response_body",
        )
    }

    /// One response header.
    pub(crate) fn response_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), CallFailed> {
        // SAFETY: pointer and length of live slices.
        let n = unsafe {
            sys::msc_add_n_response_header(
                self.raw,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        };
        check(n, "msc_add_n_response_header")
    }

    /// Phase 3.
    pub(crate) fn process_response_headers(
        &mut self,
        status: u16,
        protocol: &CStr,
    ) -> Result<(), CallFailed> {
        // SAFETY: valid transaction and C string.
        let n = unsafe {
            sys::msc_process_response_headers(self.raw, status.into(), protocol.as_ptr())
        };
        check(n, "msc_process_response_headers")
    }

    /// The status the client is answered with when the transaction never reaches the
    /// response phase (a request refused by a rule), for the audit log.
    pub(crate) fn update_status_code(&mut self, status: u16) -> Result<(), CallFailed> {
        // SAFETY: valid transaction.
        check(
            unsafe { sys::msc_update_status_code(self.raw, status.into()) },
            "msc_update_status_code",
        )
    }

    /// Phase 5: the audit log, as the rules configure it.
    pub(crate) fn process_logging(&mut self) -> Result<(), CallFailed> {
        // SAFETY: valid transaction.
        check(
            unsafe { sys::msc_process_logging(self.raw) },
            "msc_process_logging",
        )
    }

    /// The disruptive action a rule asked for, if any.
    pub(crate) fn intervention(&mut self) -> Option<Intervention> {
        let mut it = sys::Intervention {
            status: 200,
            pause: 0,
            url: ptr::null_mut(),
            log: ptr::null_mut(),
            disruptive: 0,
        };
        // SAFETY: `it` is a valid out-parameter; libmodsecurity `strdup`s `url` and `log`,
        // which are freed here.
        let n = unsafe { sys::msc_intervention(self.raw, &mut it) };
        let take = |p: *mut c_char| {
            (!p.is_null()).then(|| unsafe {
                let s = CStr::from_ptr(p).to_string_lossy().into_owned();
                sys::free(p as *mut c_void);
                s
            })
        };
        let url = take(it.url);
        let log = take(it.log);
        if n == 0 || it.disruptive == 0 {
            return None;
        }
        Some(Intervention {
            status: u16::try_from(it.status).unwrap_or(403),
            url,
            rule: log.as_deref().map(parse_match),
        })
    }
}

#[cfg(not(towergate_waf_no_lib))]
impl Drop for Transaction {
    fn drop(&mut self) {
        // SAFETY: freed once; the sink outlives this call (dropped after it).
        unsafe { sys::msc_transaction_cleanup(self.raw) };
    }
}

/// The same calls in a build without the library: never reached, since no [`RuleSet`]
/// can be made there.
#[cfg(towergate_waf_no_lib)]
#[allow(missing_docs, clippy::unused_self)]
impl Transaction {
    pub(crate) fn connection(
        &mut self,
        _: &CStr,
        _: u16,
        _: &CStr,
        _: u16,
    ) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn uri(&mut self, _: &CStr, _: &CStr, _: &CStr) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn request_header(&mut self, _: &[u8], _: &[u8]) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn process_request_headers(&mut self) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn append_request_body(&mut self, _: &[u8]) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn process_request_body(&mut self) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn response_header(&mut self, _: &[u8], _: &[u8]) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn append_response_body(&mut self, _: &[u8]) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn process_response_body(&mut self) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn process_response_headers(&mut self, _: u16, _: &CStr) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn process_logging(&mut self) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn update_status_code(&mut self, _: u16) -> Result<(), CallFailed> {
        Err(CallFailed(NO_LIB))
    }
    pub(crate) fn intervention(&mut self) -> Option<Intervention> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_log_lines() {
        let line = r#"ModSecurity: Access denied with code 403 (phase 2). Matched "Operator `Ge' with parameter `5' against variable `TX:ANOMALY_SCORE' (Value: `10' ) [file "/x.conf"] [line "80"] [id "949110"] [rev ""] [msg "Inbound Anomaly Score Exceeded (Total Score: 10)"] [data ""]"#;
        assert_eq!(
            parse_match(line),
            RuleMatch {
                id: "949110".into(),
                msg: "Inbound Anomaly Score Exceeded (Total Score: 10)".into()
            }
        );
        assert_eq!(field("no fields", "id"), None);
        assert_eq!(parse_match("[id \"1\"] [msg \"a\nb\"]").msg, "a b");
        assert_eq!(field(r#"[idx "1"] [id "2"]"#, "id"), Some("2"));
    }
}
