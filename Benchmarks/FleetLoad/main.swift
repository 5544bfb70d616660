// Fleet load: N simulated vessels, each a real protocol client (keys enrolled on the shore,
// challenge and ML-DSA proof, token, X-Wing HPKE sealed requests, its own partition of crew rows
// and a few writes each way per exchange), exchanging against one `fleetsync serve` process and
// one shore PostgreSQL 15 (a throwaway cluster), while a writer on the shore changes their
// partitions. Prints, per fleet size: exchanges per second, p50/p99/max exchange latency,
// failures by kind, the server's peak resident memory (VmHWM) and the shore database's
// connections in use (peak). Run through benchmarks/fleet-load.sh (release build).
import Foundation

struct Options {
    var binary = ".build/release/fleetsync"
    var fleets = [50, 100, 200, 500, 1_000]
    var seconds = 30
    var interval = 5.0
    var writes = 3
    var crew = 8
    var pool = 20
    var exchanges = 64
    var queueSeconds: Double?
    var queueLength: Int?
    var longPoll = false
    var statements = false
    /// Seconds over which the vessels join before the window; nil: `--start cold`.
    var joinSeconds: Double? = 5

    static let usage = """
        usage: fleetsync-fleet-load [--fleetsync PATH] [--vessels 50,100,200,500,1000] [--seconds 30]
                                    [--interval 5] [--writes 3] [--crew 8] [--pool 20] [--exchanges 64]
                                    [--queue-seconds S] [--queue-length N] [--mode interval|long-poll] [--statements on]
                                    [--start joined|cold] [--join-seconds 5]
          --vessels    fleet sizes to run, one after the other, each against a fresh shore
          --seconds    how long each fleet exchanges
          --interval   seconds between one vessel's exchanges (±20 %); more to fetch: at once
          --writes     writes per exchange each way (vessel: fields of its rows; shore: its partition)
          --crew       crew rows routed to each vessel at the start
          --pool       [shore] database_connections;  --exchanges  [shore] concurrent_exchanges
          --queue-seconds, --queue-length   [shore] exchange_queue_seconds, exchange_queue_length
          --mode       interval: every vessel exchanges every --interval (the stress figures);
                       long-poll: as the daemon by default: writes sent as they commit (every
                       --interval), a long poll held open between them
          --statements on: load pg_stat_statements and print the statements that took PostgreSQL's time
          --start      joined (default): every vessel makes its first contact (token, catch-up
                       pages) before the measured window, starting at a random moment of
                       --join-seconds; the join is reported apart. cold: the first contacts are
                       made inside the window, at each vessel's first exchange
        """

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var rest = arguments[...]
        var joinSpread: Double?
        func fail(_ why: String) -> Never {
            FileHandle.standardError.write(Data("fleetsync-fleet-load: \(why)\n\(usage)\n".utf8))
            exit(2)
        }
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { fail("\(flag) needs a value") }
            func int(_ range: ClosedRange<Int>) -> Int {
                guard let n = Int(value), range.contains(n) else { fail("\(flag) \(value): expected a whole number in \(range)") }
                return n
            }
            switch flag {
            case "--fleetsync": options.binary = value
            case "--vessels":
                let sizes = value.split(separator: ",").compactMap { Int($0) }
                guard !sizes.isEmpty, sizes.allSatisfy({ (1...20_000).contains($0) }) else { fail("--vessels \(value): expected sizes like 50,100,500 (1 to 20000)") }
                options.fleets = sizes
            case "--seconds": options.seconds = int(5...3_600)
            case "--interval":
                guard let s = Double(value), s >= 0.1, s <= 3_600 else { fail("--interval \(value): expected seconds from 0.1 to 3600") }
                options.interval = s
            case "--writes": options.writes = int(0...100)
            case "--crew": options.crew = int(1...1_000)
            case "--pool": options.pool = int(1...1_000)
            case "--exchanges": options.exchanges = int(1...100_000)
            case "--queue-seconds":
                guard let s = Double(value), s >= 0, s <= 60 else { fail("--queue-seconds \(value): expected seconds from 0 to 60") }
                options.queueSeconds = s
            case "--queue-length": options.queueLength = int(0...100_000)
            case "--mode":
                guard ["interval", "long-poll"].contains(value) else { fail("--mode \(value): expected interval or long-poll") }
                options.longPoll = value == "long-poll"
            case "--statements": options.statements = value == "on"
            case "--start":
                guard ["joined", "cold"].contains(value) else { fail("--start \(value): expected joined or cold") }
                options.joinSeconds = value == "cold" ? nil : (options.joinSeconds ?? 5)
            case "--join-seconds":
                guard let s = Double(value), s >= 0, s <= 3_600 else { fail("--join-seconds \(value): expected seconds from 0 to 3600") }
                joinSpread = s
            default: fail("unknown option \(flag)")
            }
        }
        if let joinSpread { options.joinSeconds = options.joinSeconds == nil ? nil : joinSpread }
        guard FileManager.default.isExecutableFile(atPath: options.binary) else { fail("no fleetsync executable at \(options.binary): build it (swift build -c release --product fleetsync)") }
        return options
    }
}

// Each simulated vessel has its own HTTP connections: allow a descriptor per connection.
var limit = rlimit()
getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
limit.rlim_cur = limit.rlim_max
setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
let queue = (options.queueSeconds.map { "exchange_queue_seconds \($0)" } ?? "exchange_queue_seconds default") + ", " + (options.queueLength.map { "exchange_queue_length \($0)" } ?? "exchange_queue_length default")
let mode = options.longPoll ? "long poll (writes sent as they commit, every \(options.interval) s per vessel; a long poll held open between them)" : "an exchange every \(options.interval) s per vessel"
let start = options.joinSeconds.map { "every vessel joins (token, catch-up) over the first \($0) s before the window" } ?? "cold start: first contacts inside the window"
print("fleet load: \(options.seconds) s per fleet, \(start), \(mode), \(options.writes) writes each way per exchange, \(options.crew) crew per vessel, pool \(options.pool), concurrent_exchanges \(options.exchanges), \(queue)")
func ms(_ s: Double) -> String { String(format: "%.0f", s * 1_000) }
var rows: [String] = []
var joins: [String] = []
for n in options.fleets {
    let run = LoadRun(binary: options.binary, vessels: n, seconds: options.seconds, interval: options.interval, writes: options.writes, crew: options.crew,
                      bounds: .init(databaseConnections: options.pool, concurrentExchanges: options.exchanges, queueSeconds: options.queueSeconds, queueLength: options.queueLength),
                      longPoll: options.longPoll, statements: options.statements, joinSpread: options.joinSeconds)
    let r = try await run.run()
    let polls = options.longPoll ? ", long polls answered \(r.pollsWithEvents) with events and \(r.pollsEmpty) empty, \(r.abandoned) abandoned for a write" : ""
    let failures = r.failures.isEmpty ? "0" : r.failures.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    print("\(n) vessels: \(r.exchanges) exchanges, \(String(format: "%.1f", r.perSecond))/s, p50 \(ms(r.p50)) ms, p99 \(ms(r.p99)) ms, max \(ms(r.maximum)) ms (after the first \(Int(2 * options.interval)) s: p99 \(ms(r.steadyP99)) ms, \(r.steadyFailures) failures), "
          + "failures \(failures), events vessel→shore \(r.sent), shore→vessel \(r.received) (shore wrote \(r.shoreWrites) rows), "
          + "server peak \(String(format: "%.0f", r.peakMB)) MB (after \(String(format: "%.0f", r.afterMB)) MB), server CPU \(String(format: "%.1f", r.serverCPU)) s, "
          + "PostgreSQL CPU \(String(format: "%.1f", r.databaseCPU)) s, generator CPU \(String(format: "%.1f", r.generatorCPU)) s, other work on the machine \(String(format: "%.1f", max(0, r.machineCPU - r.serverCPU - r.databaseCPU - r.generatorCPU))) s, "
          + "PostgreSQL connections peak \(r.connections) (pool \(r.serverConnections) of \(r.pool))\(polls)")
    r.statements.forEach { print($0) }
    if let j = r.join {
        let failed = j.failures.isEmpty ? "0" : j.failures.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        print("  join: \(n - j.unjoined) of \(n) vessels caught up in \(String(format: "%.1f", j.seconds)) s, \(j.requests) requests, p50 \(ms(j.p50)) ms, p99 \(ms(j.p99)) ms, max \(ms(j.maximum)) ms, failures \(failed)")
        joins.append("| \(n) | \(n - j.unjoined) | \(String(format: "%.1f", j.seconds)) | \(j.requests) | \(ms(j.p50)) | \(ms(j.p99)) | \(ms(j.maximum)) | \(failed) |")
    }
    let cpu = "\(String(format: "%.1f", r.serverCPU)) / \(String(format: "%.1f", r.databaseCPU)) / \(String(format: "%.1f", r.generatorCPU))"
    rows.append("| \(n) | \(r.exchanges) | \(String(format: "%.1f", r.perSecond)) | \(ms(r.p50)) | \(ms(r.p99)) (\(ms(r.steadyP99))) | \(ms(r.maximum)) | \(failures) (\(r.steadyFailures)) | \(r.sent) / \(r.received) | \(String(format: "%.0f", r.peakMB)) | \(cpu) | \(r.connections) (\(r.serverConnections)/\(r.pool)) |")
}
print("""

    | vessels | exchanges | per s | p50 ms | p99 ms (after the start) | max ms | failures (after the start) | events up / down | server peak MB | CPU s: server / PostgreSQL / generator | PG connections (pool used/size) |
    |---|---|---|---|---|---|---|---|---|---|---|
    """)
rows.forEach { print($0) }
if !joins.isEmpty {
    print("""

        The join, before the window (first contacts: challenge, token, catch-up pages; a busy answer retried after 1-2 s):

        | vessels | caught up | seconds | requests | p50 ms | p99 ms | max ms | failures |
        |---|---|---|---|---|---|---|---|
        """)
    joins.forEach { print($0) }
}
