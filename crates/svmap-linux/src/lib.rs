//! svmap on the real address space of a Linux process.
