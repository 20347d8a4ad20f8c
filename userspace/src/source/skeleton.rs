//! A BPF skeleton together with the object storage it borrows. libbpf-rs skeletons borrow a
//! `MaybeUninit<OpenObject>` for their whole life; leaking one per attach (`Box::leak`) grows
//! the probe with every VM it attaches to, which `--all` does for hours.

use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::{Deref, DerefMut};

use anyhow::Result;
use libbpf_rs::OpenObject;

pub struct Owned<S> {
    skel: ManuallyDrop<S>,
    object: *mut MaybeUninit<OpenObject>,
}

// SAFETY: the storage is only reached through the skeleton, which moves with it.
unsafe impl<S: Send> Send for Owned<S> {}

impl<S> Owned<S> {
    /// `build` opens and loads the skeleton in the storage given to it.
    pub fn new(build: impl FnOnce(&'static mut MaybeUninit<OpenObject>) -> Result<S>) -> Result<Owned<S>> {
        let object = Box::into_raw(Box::new(MaybeUninit::uninit()));
        // SAFETY: the storage outlives the skeleton: it is freed in Drop, after the skeleton.
        match build(unsafe { &mut *object }) {
            Ok(skel) => Ok(Owned { skel: ManuallyDrop::new(skel), object }),
            Err(e) => {
                // SAFETY: whatever borrowed the storage was dropped when `build` failed.
                drop(unsafe { Box::from_raw(object) });
                Err(e)
            }
        }
    }
}

impl<S> Deref for Owned<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.skel
    }
}

impl<S> DerefMut for Owned<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.skel
    }
}

impl<S> Drop for Owned<S> {
    fn drop(&mut self) {
        // SAFETY: the skeleton (which closes the BPF object in the storage) goes first, then
        // the storage; neither is used again.
        unsafe {
            ManuallyDrop::drop(&mut self.skel);
            drop(Box::from_raw(self.object));
        }
    }
}
