import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What the idle vessel daemon gives back to the system. glibc keeps memory a finished exchange
/// freed in per-thread arenas (one per thread that ever allocated, up to eight per core), so a
/// daemon's resident size crept up over hundreds of idle exchanges; two arenas and a trim after
/// each idle exchange keep it flat (docs/BENCHMARKS.md, *Vessel daemon memory*).
/// `FLEETSYNC_HEAP_TRIM=0` turns both off (for that benchmark's side-by-side run).
enum Heap {
    private typealias Trim = @convention(c) (Int) -> Int32
    private typealias Option = @convention(c) (Int32, Int32) -> Int32
    private static let enabled = ProcessInfo.processInfo.environment["FLEETSYNC_HEAP_TRIM"] != "0"
    private static let trim: Trim? = symbol("malloc_trim")
    private static let option: Option? = symbol("mallopt")
    /// glibc's M_ARENA_MAX.
    private static let arenaMaximum: Int32 = -8

    private static func symbol<T>(_ name: String) -> T? {
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), name).map { unsafeBitCast($0, to: T.self) }
    }

    /// At most `count` malloc arenas from now on (call before the daemon starts its work).
    static func limitArenas(_ count: Int32) {
        guard enabled, let option else { return }
        _ = option(arenaMaximum, count)
    }

    /// Returns the free memory at the top of every arena to the system.
    static func giveBack() {
        guard enabled, let trim else { return }
        _ = trim(0)
    }
}
