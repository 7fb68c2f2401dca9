//! Loader for the relay's XDP program: load and verify the embedded object, attach it to named
//! interfaces, program flows, read the outcome counters, and detach cleanly.
//!
//! The object is built from `relay-ebpf` by this crate's `build.rs` and embedded in the binary,
//! so relayd never reads an object from disk at run time. Attachment uses a BPF link where the
//! kernel has one (closing relayd's file descriptors detaches it, even on a crash) and netlink
//! otherwise; [`RelayXdp::detach_all`] and `Drop` detach explicitly.
//!
//! For a restart that does not interrupt media, [`RelayXdp::load_pinned`] pins the maps in a
//! bpffs directory (or adopts the ones a previous relayd left there) and
//! [`RelayXdp::attach_pinned`] pins each attachment's link (or atomically replaces the program
//! of a link found pinned, with `bpf_link_update`). The kernel keeps a pinned link attached and
//! its maps alive when relayd exits, so flows pinned in XDP keep forwarding meanwhile.
//! [`RelayXdp::keep_on_drop`] leaves them so on exit; [`RelayXdp::detach_all`] and
//! [`RelayXdp::unpin_maps`] remove everything.

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{xdp::XdpMapError, DevMapHash, HashMap, MapData, MapError, PerCpuArray, XskMap},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        ProgramError, TestRun, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use relay_common::{
    Counter, FlowEntry, FlowKey, FlowStats, BENCH_COUNTER_MAP_NAME, COUNTER_COUNT,
    COUNTER_MAP_NAME, DEVMAP_NAME, FLOW_MAP_NAME, FLOW_STATS_MAP_NAME, PINNED_MAP_NAMES,
    XDP_PROGRAM_NAME, XSK_BASE_MAP_NAME, XSK_MAP_NAME,
};
use tracing::{info, warn};

/// The XDP object built from `relay-ebpf`, embedded at compile time.
static RELAY_XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay-xdp"));

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`): the fast path, and the default.
    Native,
    /// In the generic network stack (`XDP_FLAGS_SKB_MODE`): works on any device but costs an
    /// skb allocation per packet. Only used when asked for, with a warning.
    Generic,
}

impl AttachMode {
    const fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

impl std::str::FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" | "driver" => Ok(Self::Native),
            "generic" | "skb" => Ok(Self::Generic),
            other => Err(format!(
                "unknown XDP mode {other:?} (expected native or generic)"
            )),
        }
    }
}

/// The kernel's XDP return codes (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    /// `XDP_ABORTED`: program error; the packet is dropped and a tracepoint fires.
    Aborted,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`: continue into the kernel stack.
    Pass,
    /// `XDP_TX`: bounce out of the receiving interface.
    Tx,
    /// `XDP_REDIRECT`: to another interface, CPU or AF_XDP socket.
    Redirect,
}

impl XdpAction {
    /// Decodes a program's return value.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Aborted),
            1 => Some(Self::Drop),
            2 => Some(Self::Pass),
            3 => Some(Self::Tx),
            4 => Some(Self::Redirect),
            _ => None,
        }
    }
}

/// Errors of the XDP loader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpError {
    /// The embedded object could not be parsed or its maps created.
    #[error("loading the XDP object failed: {source}")]
    Object {
        /// The loader's error.
        #[source]
        source: Box<EbpfError>,
    },
    /// The object lacks the program or a map this build expects.
    #[error("the XDP object has no {kind} named {name}")]
    Missing {
        /// "program" or "map".
        kind: &'static str,
        /// The missing name.
        name: &'static str,
    },
    /// The kernel refused the program (verifier, permissions).
    #[error("the kernel refused the XDP program (are you root, with BPF enabled?): {source}")]
    Verify {
        /// The program error, with the verifier log where there is one.
        #[source]
        source: Box<ProgramError>,
    },
    /// The interface does not exist.
    #[error("no network interface named {interface:?}")]
    UnknownInterface {
        /// The name that was asked for.
        interface: String,
    },
    /// The program is already attached to this interface by this relayd.
    #[error("the XDP program is already attached to {interface}")]
    AlreadyAttached {
        /// The interface.
        interface: String,
    },
    /// The kernel refused the attachment.
    #[error("attaching XDP to {interface} in {mode} mode failed{hint}: {source}")]
    Attach {
        /// The interface.
        interface: String,
        /// The mode that was asked for.
        mode: AttachMode,
        /// A hint for the operator ("" when none applies).
        hint: &'static str,
        /// The kernel's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// Detaching failed; the kernel still runs the program on that interface until relayd exits.
    #[error("detaching XDP from {interface} failed: {source}")]
    Detach {
        /// The interface.
        interface: String,
        /// The kernel's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("BPF map {map} {operation} failed: {source}")]
    Map {
        /// The map name.
        map: &'static str,
        /// What was being done.
        operation: &'static str,
        /// The map error.
        #[source]
        source: MapError,
    },
    /// A device map operation failed.
    #[error("BPF devmap {operation} failed: {source}")]
    DevMap {
        /// What was being done.
        operation: &'static str,
        /// The map error.
        #[source]
        source: Box<XdpMapError>,
    },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF_PROG_TEST_RUN failed: {source}")]
    TestRun {
        /// The kernel's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// Pinning (or adopting a pinned) link or map failed.
    #[error("pinning at {path}: {reason}")]
    Pin {
        /// The bpffs path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// How an attachment is held.
#[derive(Debug)]
enum AttachmentLink {
    /// Owned by the program: detached when relayd exits.
    Owned(aya::programs::xdp::XdpLinkId),
    /// Pinned in bpffs: stays attached until the pin is removed.
    Pinned {
        /// Our handle (closing it alone does not detach).
        link: FdLink,
        /// The pin.
        pin: PathBuf,
    },
}

/// One attachment made by this loader.
#[derive(Debug)]
struct Attachment {
    interface: String,
    mode: AttachMode,
    link: AttachmentLink,
}

/// Outcome counters summed over all CPUs, indexed by [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    values: [u64; COUNTER_COUNT as usize],
}

impl CounterSnapshot {
    /// The value of one counter.
    pub const fn get(&self, counter: Counter) -> u64 {
        self.values[counter.index() as usize]
    }

    /// The number of packets the program saw (every packet bumps exactly one counter).
    pub fn total(&self) -> u64 {
        self.values.iter().sum()
    }

    /// Every counter with its value, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(|&c| (c, self.get(c)))
    }

    /// Per-counter difference `self - earlier` (saturating, for counters that were reset).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let mut values = [0; COUNTER_COUNT as usize];
        for (i, v) in values.iter_mut().enumerate() {
            *v = self.values[i].saturating_sub(earlier.values[i]);
        }
        Self { values }
    }
}

/// The result of running the program once on a frame with `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program's return value, decoded (`None` for a value outside `enum xdp_action`).
    pub action: Option<XdpAction>,
    /// The raw return value.
    pub return_value: u32,
    /// The frame as the program left it.
    pub frame_out: Vec<u8>,
}

/// The loaded XDP program, its maps and its attachments.
pub struct RelayXdp {
    ebpf: Ebpf,
    flows: HashMap<MapData, FlowKey, FlowEntry>,
    counters: PerCpuArray<MapData, u64>,
    devmap: DevMapHash<MapData>,
    flow_stats: PerCpuArray<MapData, FlowStats>,
    xsks: XskMap<MapData>,
    xsk_base: HashMap<MapData, u32, u32>,
    attachments: Vec<Attachment>,
    /// The program this instance loaded (relayd's, or a benchmark helper).
    program_name: &'static str,
    /// Where the maps are pinned, if they are.
    map_pins: Option<PathBuf>,
    /// Leave pinned links and maps in place when dropped.
    keep: bool,
}

impl fmt::Debug for RelayXdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayXdp")
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

impl RelayXdp {
    /// Loads the embedded object, creates its maps and has the kernel verify the program.
    /// Nothing is attached yet.
    pub fn load() -> Result<Self, XdpError> {
        Self::load_from(None, XDP_PROGRAM_NAME)
    }

    /// Loads one of the benchmark helper programs of the object instead of relayd's
    /// (`relay_common::BENCH_*_PROGRAM_NAME`); maps as for [`RelayXdp::load`].
    pub fn load_bench(program: &'static str) -> Result<Self, XdpError> {
        Self::load_from(None, program)
    }

    /// The benchmark programs' packet count, summed over CPUs.
    pub fn bench_count(&self) -> Result<u64, XdpError> {
        let map = self
            .ebpf
            .map(BENCH_COUNTER_MAP_NAME)
            .ok_or(XdpError::Missing {
                kind: "map",
                name: BENCH_COUNTER_MAP_NAME,
            })?;
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|source| XdpError::Map {
                map: BENCH_COUNTER_MAP_NAME,
                operation: "open",
                source,
            })?;
        let values = array.get(&0, 0).map_err(|source| XdpError::Map {
            map: BENCH_COUNTER_MAP_NAME,
            operation: "read",
            source,
        })?;
        Ok(values.iter().sum())
    }

    /// Has the in-kernel generator ([`relay_common::BENCH_TX_PROGRAM_NAME`]) restore the first
    /// [`relay_common::BENCH_TEMPLATE_LEN`] bytes of every frame from `frame` before sending.
    pub fn set_bench_template(&mut self, frame: &[u8]) -> Result<(), XdpError> {
        let mut template = relay_common::BenchTemplate {
            enabled: 1,
            bytes: [0; relay_common::BENCH_TEMPLATE_LEN],
        };
        let len = frame.len().min(relay_common::BENCH_TEMPLATE_LEN);
        template.bytes[..len].copy_from_slice(&frame[..len]);
        self.set_bench_setting(relay_common::BENCH_TEMPLATE_MAP_NAME, template)
    }

    /// Has [`relay_common::BENCH_REDIRECT_PROGRAM_NAME`] send to `ifindex` (also put in the
    /// devmap here).
    pub fn set_bench_egress(&mut self, ifindex: u32) -> Result<(), XdpError> {
        self.add_egress(ifindex)?;
        self.set_bench_setting(relay_common::BENCH_EGRESS_MAP_NAME, ifindex)
    }

    /// Writes slot 0 of a benchmark program's one-entry settings array `name`.
    fn set_bench_setting<T: aya::Pod>(
        &mut self,
        name: &'static str,
        value: T,
    ) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(XdpError::Missing { kind: "map", name })?;
        let mut array: aya::maps::Array<&mut MapData, T> = aya::maps::Array::try_from(map)
            .map_err(|source| XdpError::Map {
                map: name,
                operation: "open",
                source,
            })?;
        array.set(0, value, 0).map_err(|source| XdpError::Map {
            map: name,
            operation: "write",
            source,
        })
    }

    /// Runs the loaded program `repeat` times on `frame` as live frames received on
    /// `ingress_ifindex` (`BPF_F_TEST_XDP_LIVE_FRAMES`: `XDP_TX` and redirects really
    /// transmit), `batch` frames per kernel batch. With [`relay_common::BENCH_TX_PROGRAM_NAME`]
    /// this generates `repeat` packets out of the interface in the kernel.
    pub fn run_live_frames(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
        batch: u32,
    ) -> Result<(), XdpError> {
        let frame_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let mut context = [0u8; 24];
        context[4..8].copy_from_slice(&frame_len.to_ne_bytes());
        context[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        self.program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&context),
                repeat,
                attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::default()
            })
            .map_err(|source| XdpError::TestRun {
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// As [`RelayXdp::load`], with every map pinned in `dir` (a bpffs directory, created if
    /// missing): maps already pinned there (by a previous relayd with the same map layout) are
    /// adopted with their contents, the others are created and pinned.
    pub fn load_pinned(dir: &Path) -> Result<Self, XdpError> {
        std::fs::create_dir_all(dir).map_err(|e| XdpError::Pin {
            path: dir.to_owned(),
            reason: format!("cannot create the directory: {e}"),
        })?;
        Self::load_from(Some(dir), XDP_PROGRAM_NAME)
    }

    fn load_from(pins: Option<&Path>, program_name: &'static str) -> Result<Self, XdpError> {
        let mut loader = EbpfLoader::new();
        if let Some(dir) = pins {
            for name in PINNED_MAP_NAMES {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader
            .load(RELAY_XDP_OBJECT)
            .map_err(|source| XdpError::Object {
                source: Box::new(source),
            })?;
        let program: &mut Xdp = ebpf
            .program_mut(program_name)
            .ok_or(XdpError::Missing {
                kind: "program",
                name: program_name,
            })?
            .try_into()
            .map_err(|source| XdpError::Verify {
                source: Box::new(source),
            })?;
        program.load().map_err(|source| XdpError::Verify {
            source: Box::new(source),
        })?;
        let flows = take_map(&mut ebpf, FLOW_MAP_NAME)?;
        let flows = HashMap::try_from(flows).map_err(|source| XdpError::Map {
            map: FLOW_MAP_NAME,
            operation: "open",
            source,
        })?;
        let counters = take_map(&mut ebpf, COUNTER_MAP_NAME)?;
        let counters = PerCpuArray::try_from(counters).map_err(|source| XdpError::Map {
            map: COUNTER_MAP_NAME,
            operation: "open",
            source,
        })?;
        let devmap = take_map(&mut ebpf, DEVMAP_NAME)?;
        let devmap = DevMapHash::try_from(devmap).map_err(|source| XdpError::Map {
            map: DEVMAP_NAME,
            operation: "open",
            source,
        })?;
        let flow_stats = take_map(&mut ebpf, FLOW_STATS_MAP_NAME)?;
        let flow_stats = PerCpuArray::try_from(flow_stats).map_err(|source| XdpError::Map {
            map: FLOW_STATS_MAP_NAME,
            operation: "open",
            source,
        })?;
        let xsks = take_map(&mut ebpf, XSK_MAP_NAME)?;
        let xsks = XskMap::try_from(xsks).map_err(|source| XdpError::Map {
            map: XSK_MAP_NAME,
            operation: "open",
            source,
        })?;
        let xsk_base = take_map(&mut ebpf, XSK_BASE_MAP_NAME)?;
        let xsk_base = HashMap::try_from(xsk_base).map_err(|source| XdpError::Map {
            map: XSK_BASE_MAP_NAME,
            operation: "open",
            source,
        })?;
        Ok(Self {
            ebpf,
            flows,
            counters,
            devmap,
            flow_stats,
            xsks,
            xsk_base,
            attachments: Vec::new(),
            program_name,
            map_pins: pins.map(Path::to_owned),
            keep: false,
        })
    }

    /// Whether the maps are pinned.
    pub fn pinned(&self) -> bool {
        self.map_pins.is_some()
    }

    /// On drop, leave pinned links attached and pinned maps in place (a restart follows).
    pub fn keep_on_drop(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// Removes the map pins (the maps live on while a program or relayd uses them).
    pub fn unpin_maps(&mut self) -> Result<(), XdpError> {
        let Some(dir) = self.map_pins.take() else {
            return Ok(());
        };
        for name in PINNED_MAP_NAMES {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(XdpError::Pin {
                        path,
                        reason: format!("cannot remove: {e}"),
                    })
                }
            }
        }
        // Empty directories go too (a non-empty one is someone else's: left alone).
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// Every programmed flow (to adopt the flows a previous relayd left in pinned maps).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowEntry)>, XdpError> {
        self.flows
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| XdpError::Map {
                map: FLOW_MAP_NAME,
                operation: "iterate",
                source,
            })
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, XdpError> {
        let name = self.program_name;
        self.ebpf
            .program_mut(name)
            .ok_or(XdpError::Missing {
                kind: "program",
                name,
            })?
            .try_into()
            .map_err(|source| XdpError::Verify {
                source: Box::new(source),
            })
    }

    fn program(&self) -> Result<&Xdp, XdpError> {
        self.ebpf
            .program(self.program_name)
            .ok_or(XdpError::Missing {
                kind: "program",
                name: self.program_name,
            })?
            .try_into()
            .map_err(|source| XdpError::Verify {
                source: Box::new(source),
            })
    }

    /// Attaches the program to `interface`. Generic mode logs a warning: it is slow and only
    /// meant for devices without native XDP.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<(), XdpError> {
        if self.attachments.iter().any(|a| a.interface == interface) {
            return Err(XdpError::AlreadyAttached {
                interface: interface.to_owned(),
            });
        }
        if mode == AttachMode::Generic {
            warn!(
                interface,
                "attaching XDP in generic (skb) mode: every packet pays an skb allocation; use \
                 native mode where the driver supports it"
            );
        }
        let link = self
            .program_mut()?
            .attach(interface, mode.xdp_mode())
            .map_err(|source| match source {
                ProgramError::UnknownInterface { .. } => XdpError::UnknownInterface {
                    interface: interface.to_owned(),
                },
                source => XdpError::Attach {
                    interface: interface.to_owned(),
                    mode,
                    hint: if mode == AttachMode::Native && is_not_supported(&source) {
                        " (the driver has no native XDP; generic mode works everywhere)"
                    } else {
                        ""
                    },
                    source: Box::new(source),
                },
            })?;
        info!(interface, %mode, "XDP program attached");
        self.attachments.push(Attachment {
            interface: interface.to_owned(),
            mode,
            link: AttachmentLink::Owned(link),
        });
        Ok(())
    }

    /// Attaches to `interface` through a link pinned at `pin`: a link found there (left by a
    /// previous relayd) gets this program atomically (`bpf_link_update`, no packet sees no
    /// program); otherwise the program is attached and its link pinned. Returns whether a
    /// pinned link was adopted.
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        mode: AttachMode,
        pin: &Path,
    ) -> Result<bool, XdpError> {
        if self.attachments.iter().any(|a| a.interface == interface) {
            return Err(XdpError::AlreadyAttached {
                interface: interface.to_owned(),
            });
        }
        let pin_error = |reason: String| XdpError::Pin {
            path: pin.to_owned(),
            reason,
        };
        if pin.exists() {
            match self.adopt_link(pin) {
                Ok(link) => {
                    info!(interface, pin = %pin.display(), "XDP program replaced on the pinned link");
                    self.attachments.push(Attachment {
                        interface: interface.to_owned(),
                        mode,
                        link: AttachmentLink::Pinned {
                            link,
                            pin: pin.to_owned(),
                        },
                    });
                    return Ok(true);
                }
                Err(e) => {
                    // A link whose interface went away (or of another type): start afresh.
                    warn!(interface, %e, "the pinned XDP link cannot be adopted; replacing it");
                    std::fs::remove_file(pin)
                        .map_err(|e| pin_error(format!("cannot remove the stale pin: {e}")))?;
                }
            }
        }
        self.attach(interface, mode)?;
        let attachment = self.attachments.pop().expect("just attached");
        let AttachmentLink::Owned(id) = attachment.link else {
            unreachable!("attach makes owned links");
        };
        let link = self
            .program_mut()?
            .take_link(id)
            .map_err(|source| XdpError::Attach {
                interface: interface.to_owned(),
                mode,
                hint: "",
                source: Box::new(source),
            })?;
        let link = FdLink::try_from(link).map_err(|e| {
            pin_error(format!(
                "the attachment has no BPF link to pin (kernel 5.9+ needed): {e}"
            ))
        })?;
        let pinned = link
            .pin(pin)
            .map_err(|e| pin_error(format!("cannot pin the link: {e}")))?;
        self.attachments.push(Attachment {
            interface: interface.to_owned(),
            mode,
            link: AttachmentLink::Pinned {
                link: pinned.into(),
                pin: pin.to_owned(),
            },
        });
        Ok(false)
    }

    fn adopt_link(&mut self, pin: &Path) -> Result<FdLink, String> {
        let pinned = PinnedLink::from_pin(pin).map_err(|e| e.to_string())?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
        let program = self.program_mut().map_err(|e| e.to_string())?;
        let id = program.attach_to_link(link).map_err(|e| e.to_string())?;
        let link = program.take_link(id).map_err(|e| e.to_string())?;
        FdLink::try_from(link).map_err(|e| e.to_string())
    }

    /// The interfaces the program is attached to, with their modes.
    pub fn attached(&self) -> impl Iterator<Item = (&str, AttachMode)> {
        self.attachments
            .iter()
            .map(|a| (a.interface.as_str(), a.mode))
    }

    /// Detaches from every interface (pinned links too: their pins are removed). Every
    /// interface is tried; the first error is returned.
    pub fn detach_all(&mut self) -> Result<(), XdpError> {
        let mut first_error = None;
        while let Some(attachment) = self.attachments.pop() {
            let result = match attachment.link {
                AttachmentLink::Owned(id) => self.program_mut()?.detach(id),
                AttachmentLink::Pinned { link, pin } => {
                    if let Err(e) = std::fs::remove_file(&pin) {
                        if e.kind() != io::ErrorKind::NotFound {
                            warn!(pin = %pin.display(), %e, "cannot remove the XDP link pin");
                        }
                    }
                    if let Some(dir) = pin.parent() {
                        // The last link's directory, once empty.
                        let _ = std::fs::remove_dir(dir);
                    }
                    // The pin gone, closing the last descriptor detaches.
                    drop(link);
                    Ok(())
                }
            };
            match result {
                Ok(()) => info!(interface = attachment.interface, "XDP program detached"),
                Err(source) => {
                    warn!(interface = attachment.interface, %source, "XDP detach failed");
                    first_error.get_or_insert(XdpError::Detach {
                        interface: attachment.interface,
                        source: Box::new(source),
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Programs (or replaces) a flow.
    pub fn insert_flow(&mut self, key: FlowKey, entry: FlowEntry) -> Result<(), XdpError> {
        self.flows
            .insert(key, entry, 0)
            .map_err(|source| XdpError::Map {
                map: FLOW_MAP_NAME,
                operation: "insert",
                source,
            })
    }

    /// Removes a flow; removing a flow that is not there is not an error.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Result<(), XdpError> {
        match self.flows.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(XdpError::Map {
                map: FLOW_MAP_NAME,
                operation: "remove",
                source,
            }),
        }
    }

    /// The flow programmed for `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>, XdpError> {
        match self.flows.get(key, 0) {
            Ok(entry) => Ok(Some(entry)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(XdpError::Map {
                map: FLOW_MAP_NAME,
                operation: "lookup",
                source,
            }),
        }
    }

    /// The outcome counters, summed over CPUs.
    pub fn counters(&self) -> Result<CounterSnapshot, XdpError> {
        let mut snapshot = CounterSnapshot::default();
        for counter in Counter::ALL {
            let per_cpu =
                self.counters
                    .get(&counter.index(), 0)
                    .map_err(|source| XdpError::Map {
                        map: COUNTER_MAP_NAME,
                        operation: "read",
                        source,
                    })?;
            snapshot.values[counter.index() as usize] = per_cpu.iter().sum();
        }
        Ok(snapshot)
    }

    /// What flow `flow_id` forwarded in XDP, summed over CPUs.
    pub fn flow_stats(&self, flow_id: u32) -> Result<FlowStats, XdpError> {
        let per_cpu = self
            .flow_stats
            .get(&flow_id, 0)
            .map_err(|source| XdpError::Map {
                map: FLOW_STATS_MAP_NAME,
                operation: "read",
                source,
            })?;
        Ok(per_cpu.iter().fold(FlowStats::default(), |mut sum, s| {
            sum.packets += s.packets;
            sum.bytes += s.bytes;
            sum.wrong_source += s.wrong_source;
            sum
        }))
    }

    /// Clears flow `flow_id`'s counters (before the id is reused).
    pub fn reset_flow_stats(&mut self, flow_id: u32) -> Result<(), XdpError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| XdpError::Map {
            map: FLOW_STATS_MAP_NAME,
            operation: "count CPUs",
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: e,
            }),
        })?;
        let zero =
            aya::maps::PerCpuValues::try_from(vec![FlowStats::default(); cpus]).map_err(|e| {
                XdpError::Map {
                    map: FLOW_STATS_MAP_NAME,
                    operation: "reset",
                    source: MapError::SyscallError(aya::sys::SyscallError {
                        call: "per_cpu_values",
                        io_error: e,
                    }),
                }
            })?;
        self.flow_stats
            .set(flow_id, zero, 0)
            .map_err(|source| XdpError::Map {
                map: FLOW_STATS_MAP_NAME,
                operation: "reset",
                source,
            })
    }

    /// Lets plain flows be redirected out of interface `ifindex`.
    pub fn add_egress(&mut self, ifindex: u32) -> Result<(), XdpError> {
        self.devmap
            .insert(ifindex, ifindex, None, 0)
            .map_err(|source| XdpError::DevMap {
                operation: "insert",
                source: Box::new(source),
            })
    }

    /// Gives interface `ifindex` its first XSKMAP slot (see [`relay_common::xsk_slot`]).
    pub fn set_xsk_base(&mut self, ifindex: u32, base: u32) -> Result<(), XdpError> {
        self.xsk_base
            .insert(ifindex, base, 0)
            .map_err(|source| XdpError::Map {
                map: XSK_BASE_MAP_NAME,
                operation: "insert",
                source,
            })
    }

    /// Puts an AF_XDP socket in XSKMAP slot `slot`; crypto flows received on that slot's
    /// (interface, queue) are redirected to it. The kernel removes the entry when the socket
    /// closes.
    pub fn set_xsk(
        &mut self,
        slot: u32,
        socket: impl std::os::fd::AsRawFd,
    ) -> Result<(), XdpError> {
        self.xsks
            .set(slot, socket, 0)
            .map_err(|source| XdpError::Map {
                map: XSK_MAP_NAME,
                operation: "insert",
                source,
            })
    }

    /// Empties XSKMAP slot `slot`.
    pub fn unset_xsk(&mut self, slot: u32) -> Result<(), XdpError> {
        match self.xsks.unset(slot) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(XdpError::Map {
                map: XSK_MAP_NAME,
                operation: "remove",
                source,
            }),
        }
    }

    /// Runs the program once on `frame` as received on interface `ingress_ifindex` (of the
    /// calling thread's network namespace), with `BPF_PROG_TEST_RUN`.
    pub fn test_run_on(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<TestRunOutcome, XdpError> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex (u32 each).
        let frame_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let mut context = [0u8; 24];
        context[4..8].copy_from_slice(&frame_len.to_ne_bytes());
        context[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        self.run_test(frame, Some(&context))
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN`, as the kernel would on
    /// receive (maps and counters included). Used by tests and fixtures.
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRunOutcome, XdpError> {
        self.run_test(frame, None)
    }

    fn run_test(&self, frame: &[u8], context: Option<&[u8]>) -> Result<TestRunOutcome, XdpError> {
        // Room for programs that grow the frame (encapsulation, metadata).
        let mut frame_out = vec![0u8; frame.len() + 256];
        let result = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut frame_out),
                ctx_in: context,
                ..TestRunOptions::default()
            })
            .map_err(|source| XdpError::TestRun {
                source: Box::new(source),
            })?;
        frame_out.truncate(result.data_size_out as usize);
        Ok(TestRunOutcome {
            action: XdpAction::from_u32(result.return_value),
            return_value: result.return_value,
            frame_out,
        })
    }
}

impl Drop for RelayXdp {
    fn drop(&mut self) {
        if self.keep {
            // Pinned links stay attached and pinned maps stay; owned links detach anyway.
            let pinned = self
                .attachments
                .iter()
                .filter(|a| matches!(a.link, AttachmentLink::Pinned { .. }))
                .count();
            self.attachments
                .retain(|a| matches!(a.link, AttachmentLink::Owned(_)));
            if pinned > 0 {
                info!(
                    interfaces = pinned,
                    "XDP program left attached for the next relayd"
                );
            }
        }
        if let Err(error) = self.detach_all() {
            warn!(%error, "XDP detach on shutdown failed");
        }
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, XdpError> {
    ebpf.take_map(name)
        .ok_or(XdpError::Missing { kind: "map", name })
}

fn is_not_supported(error: &ProgramError) -> bool {
    let io_error: Option<&io::Error> = match error {
        ProgramError::SyscallError(e) => Some(&e.io_error),
        _ => None,
    };
    io_error.and_then(io::Error::raw_os_error) == Some(libc::EOPNOTSUPP)
}
