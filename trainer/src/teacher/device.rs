//! Where the teacher runs ([`DeviceSpec`]: `cpu`, `cuda`, `cuda:N`), the dtype it runs in there,
//! and the one-line description of the dense kernels a model uses on a device.

use candle_core::{DType, Device};

use super::{Result, TeacherError};

/// Where the teacher runs: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CPU.
    Cpu,
    /// CUDA device ordinal (needs the `cuda` cargo feature).
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!("device `{s}`: expected cpu, cuda or cuda:N")),
            },
        }
    }
}

impl DeviceSpec {
    /// Opens the device. CUDA without the `cuda` feature is an error that says so.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(TeacherError::Invalid(format!(
                        "device cuda:{n}: this build has no CUDA support (rebuild with `--features cuda`)"
                    )));
                }
                Ok(Device::new_cuda(n)?)
            }
        }
    }

    /// The dtype the teacher runs in on this device: f32 on CPU, bf16 on CUDA.
    pub fn dtype(self) -> DType {
        match self {
            Self::Cpu => DType::F32,
            Self::Cuda(_) => DType::BF16,
        }
    }
}

/// One line naming the kernels a model on dense `dtype` weights runs on `dev`.
pub fn dense_kernel_description(dev: &Device, dtype: DType) -> String {
    let on =
        if dev.is_cpu() { "the CPU (candle's dense matmul, gemm crate)" } else { "the GPU (candle's CUDA matmul)" };
    format!("dense {} weights on {on}", format!("{dtype:?}").to_lowercase())
}
