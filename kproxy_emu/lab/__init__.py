"""The real-kernel lab: load a node's rules into throwaway network namespaces, replay real
connections and compare the kernel's verdicts with the emulator's (needs root)."""
