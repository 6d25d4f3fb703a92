//! The cluster controller (`euca cc`): one per cluster (= availability zone).
//! (being written: see the module list in ARCHITECTURE.md once it lands)
