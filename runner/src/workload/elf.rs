//! ELF executables: whether one can run on this host, and the dynamic loader it asks for. Only the
//! header, the program headers and the interpreter's name are read (with pread, wherever they sit):
//! never the whole binary, which can be huge.

use std::fmt;
use std::fs::File;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What hybox needs to know of an ELF before running it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElfInfo {
    pub machine: String,
    /// No program interpreter (`PT_INTERP`): runs without the host's dynamic loader.
    pub is_static: bool,
    /// The dynamic loader the binary asks for, which must be visible in the sandbox.
    pub interpreter: Option<PathBuf>,
}

impl fmt::Display for ElfInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.interpreter {
            None => write!(f, "ELF {} static", self.machine),
            Some(i) => write!(f, "ELF {} dynamic ({})", self.machine, i.display()),
        }
    }
}

/// Why an ELF file is not one hybox runs on this host (the `found` of
/// [`super::WorkloadError::Unsupported`], which names the file).
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("truncated ELF header ({len} bytes)")]
    TruncatedHeader { len: usize },
    /// goblin could not parse the header or the program headers.
    #[error("a malformed ELF file ({0})")]
    Malformed(goblin::error::Error),
    /// The program headers (or the interpreter's name) claim more than [`ELF_READ_MAX`] bytes.
    #[error("a malformed ELF file ({len} bytes of headers)")]
    HeadersTooLarge { len: usize },
    /// The headers point past the end of the file (or the read failed); the I/O error is part of the
    /// message, so it is not also a `source()`.
    #[error("a malformed ELF file (reading {len} bytes at {offset}: {io})")]
    Read {
        offset: u64,
        len: usize,
        io: std::io::Error,
    },
    #[error("a malformed ELF file (interpreter name is not UTF-8)")]
    InterpreterNotUtf8,
    /// Built for another machine or word size than this host's.
    #[error("an ELF for {bits}-bit {machine}; this host runs 64-bit {host}")]
    Machine {
        bits: u8,
        machine: &'static str,
        host: &'static str,
    },
    #[error("a big-endian ELF; this host is little-endian")]
    BigEndian,
    /// A relocatable object or a core dump (`e_type`, e.g. `REL`).
    #[error("an ELF that is not an executable (type {})", goblin::elf::header::et_to_str(*.e_type))]
    NotExecutable { e_type: u16 },
    /// A shared library: `ET_DYN` like a PIE, but with no entry point to start.
    #[error("an ELF shared library without an entry point, not an executable")]
    NoEntry,
}

/// Classifies the ELF `file`, whose first bytes are `head`.
pub(super) fn classify(head: &[u8], file: &File) -> Result<ElfInfo, ElfError> {
    let at = |offset: u64, len: usize| -> Result<Vec<u8>, ElfError> {
        use std::os::unix::fs::FileExt;
        if len > ELF_READ_MAX {
            return Err(ElfError::HeadersTooLarge { len });
        }
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|io| ElfError::Read { offset, len, io })?;
        Ok(buf)
    };
    elf_info(head, at)
}

/// The ELF machine hybox runs natively on this host.
pub fn host_machine() -> (u16, &'static str) {
    #[cfg(target_arch = "x86_64")]
    return (goblin::elf::header::EM_X86_64, "x86_64");
    #[cfg(target_arch = "aarch64")]
    return (goblin::elf::header::EM_AARCH64, "aarch64");
}

/// The most bytes of ELF headers read to classify a file (program headers and the interpreter
/// name; a real executable needs a few KiB).
const ELF_READ_MAX: usize = 1 << 20;

/// Classifies an ELF from its first bytes (`head`); `at(offset, len)` reads more of the file (the
/// program headers and `PT_INTERP` can sit anywhere).
fn elf_info(
    head: &[u8],
    mut at: impl FnMut(u64, usize) -> Result<Vec<u8>, ElfError>,
) -> Result<ElfInfo, ElfError> {
    use goblin::elf::{header, program_header, Elf, ProgramHeader};
    let header_len = if head.get(header::EI_CLASS) == Some(&header::ELFCLASS32) {
        header::header32::SIZEOF_EHDR
    } else {
        header::header64::SIZEOF_EHDR
    };
    if head.len() < header_len {
        return Err(ElfError::TruncatedHeader { len: head.len() });
    }
    let elf = Elf::parse_header(head)
        .and_then(Elf::lazy_parse)
        .map_err(ElfError::Malformed)?;
    let machine = header::machine_to_str(elf.header.e_machine);
    let (host, host_name) = host_machine();
    if !elf.is_64 || elf.header.e_machine != host {
        return Err(ElfError::Machine {
            bits: if elf.is_64 { 64 } else { 32 },
            machine,
            host: host_name,
        });
    }
    if !elf.little_endian {
        return Err(ElfError::BigEndian);
    }
    match elf.header.e_type {
        header::ET_EXEC | header::ET_DYN => {}
        t => return Err(ElfError::NotExecutable { e_type: t }),
    }
    if elf.entry == 0 {
        return Err(ElfError::NoEntry);
    }
    let phnum = usize::from(elf.header.e_phnum);
    let table = at(
        elf.header.e_phoff,
        phnum.saturating_mul(usize::from(elf.header.e_phentsize)),
    )?;
    // 64-bit little-endian: checked above.
    let ctx = goblin::container::Ctx::new(
        goblin::container::Container::Big,
        goblin::container::Endian::Little,
    );
    let phdrs = ProgramHeader::parse(&table, 0, phnum, ctx).map_err(ElfError::Malformed)?;
    let mut interpreter = None;
    if let Some(ph) = phdrs
        .iter()
        .find(|p| p.p_type == program_header::PT_INTERP && p.p_filesz != 0)
    {
        let len = usize::try_from(ph.p_filesz - 1).unwrap_or(usize::MAX);
        let name = at(ph.p_offset, len)?;
        let name = String::from_utf8(name).map_err(|_| ElfError::InterpreterNotUtf8)?;
        interpreter = Some(PathBuf::from(name.trim_end_matches('\0')));
    }
    Ok(ElfInfo {
        machine: host_name.to_string(),
        is_static: interpreter.is_none(),
        interpreter,
    })
}
