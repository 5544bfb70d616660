// Apply throughput and memory: a 100,000-event batch of inserts and updates across three
// FK-linked tables, delivered shuffled, applied by FleetSync's applier, against a client COPY of
// the same final rows into empty copies of the tables (same keys and foreign keys, no triggers).
// Measured alternately in one run; prints each run, the medians and the ratio.
import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import NIOCore
import PostgresNIO

// Child mode: apply one wire-encoded batch from a file and report time and peak memory. Run as a
// process of its own so that its resident memory is that of applying, nothing else.
if CommandLine.arguments.count == 5, CommandLine.arguments[1] == "--apply-child" {
    let (url, file, configurationFile) = (CommandLine.arguments[2], CommandLine.arguments[3], CommandLine.arguments[4])
    let configuration = try ConfigurationLoader.load(text: try String(contentsOfFile: configurationFile, encoding: .utf8))
    let db = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
    let schema = try await LocalSchema.load(configuration: configuration, session: db)
    let telemetry = TelemetryWriter(url: url, logger: Fixtures.logger)
    let applier = Applier(schema: schema, session: db, telemetry: telemetry)
    let bytes = [UInt8](FileManager.default.contents(atPath: file)!)
    var limits = WireLimits()
    limits.maximumEvents = 1_000_000
    if ProcessInfo.processInfo.environment["PROFILE_DECODE"] != nil {
        let t0 = ContinuousClock.now
        var n = 0
        _ = try WireCodec.decodeRequestStreaming(bytes, limits: limits) { _ in n += 1 }
        FileHandle.standardError.write(Data("decode only: \(n) events in \(ContinuousClock.now - t0)\n".utf8))
    }
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    let before = ((try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? "").split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    FileHandle.standardError.write(Data("before apply: \(before)\n".utf8))
    // The CPU time of the database backend that applies, read from /proc (same machine).
    let backend: Int32 = try await db.scalar("SELECT pg_backend_pid()")
    func backendCPU() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(backend)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return (Double(fields[11]) ?? 0) / 100 + (Double(fields[12]) ?? 0) / 100  // utime, stime in ticks
    }
    let backendBefore = backendCPU()
    let start = ContinuousClock.now
    // Reading the message (which checks every event) is part of applying it.
    let (_, batch) = try WireEventBatch.request(bytes, limits: limits)
    let report = try await applier.apply(batch: batch, from: "shore")
    let elapsed = ContinuousClock.now - start
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let peak = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }.map { Int($0.split(separator: " ")[1]) ?? 0 } ?? 0
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue == 0 ? __rusage_who_t(0) : __rusage_who_t(0), &usage)
    let cpu = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    print("APPLIED \(report.appliedRows) \(report.deadLettered) \(seconds) \(peak) \(cpu) \(backendCPU() - backendBefore)")
    await telemetry.close()
    await db.close()
    exit(0)
}

let environment = ProcessInfo.processInfo.environment
if environment["WORKLOAD"] == "sealing" {
    try await sealingWorkload(rounds: Int(environment["ROUNDS"] ?? "") ?? 5)
    exit(0)
}
if environment["WORKLOAD"] == "updates" {
    try await updatesWorkload(rows: Int(environment["ROWS"] ?? "") ?? 100_000, batches: Int(environment["BATCHES"] ?? "") ?? 20,
                              rounds: Int(environment["ROUNDS"] ?? "") ?? 3)
    exit(0)
}
let totalEvents = Int(environment["EVENTS"] ?? "") ?? 100_000
let rounds = Int(environment["ROUNDS"] ?? "") ?? 3
print("command: EVENTS=\(totalEvents) ROUNDS=\(rounds) swift run -c release fleetsync-apply-benchmark")



let schemaSQL = """
    CREATE TABLE bench_a (id uuid PRIMARY KEY, name text, amount integer, note text);
    CREATE TABLE bench_b (id uuid PRIMARY KEY, a_id uuid NOT NULL REFERENCES bench_a (id), name text, amount integer, note text);
    CREATE TABLE bench_c (id uuid PRIMARY KEY, b_id uuid NOT NULL REFERENCES bench_b (id), name text, amount integer, note text);
    """

// Inserts: 1/7 in a, 2/7 in b, 4/7 in c (70 %); updates of random rows (30 %).
var rng = SystemRandomNumberGenerator()
struct Row { var table: String; var id: UUID; var parent: UUID? }
let inserts = totalEvents * 7 / 10
let totalRows = inserts
var rows: [Row] = []
rows.reserveCapacity(inserts)
let aCount = inserts / 7, bCount = inserts * 2 / 7
for i in 0..<inserts {
    if i < aCount {
        rows.append(Row(table: "bench_a", id: UUID(), parent: nil))
    } else if i < aCount + bCount {
        rows.append(Row(table: "bench_b", id: UUID(), parent: rows[Int.random(in: 0..<aCount, using: &rng)].id))
    } else {
        rows.append(Row(table: "bench_c", id: UUID(), parent: rows[aCount + Int.random(in: 0..<bCount, using: &rng)].id))
    }
}
var events: [ChangeEvent] = []
events.reserveCapacity(totalEvents)
for (i, row) in rows.enumerated() {
    let clock = FieldClock(counter: Int64(i + 1), node: "shore")
    var fields: [String: FieldChange] = [
        "name": .init(value: .string("row \(i)"), clock: clock),
        "amount": .init(value: .number(String(i % 1000)), clock: clock),
        "note": .init(value: .string("inserted"), clock: clock),
    ]
    if let parent = row.parent { fields[row.table == "bench_b" ? "a_id" : "b_id"] = .init(value: .string(parent.uuidString.lowercased()), clock: clock) }
    events.append(ChangeEvent(table: row.table, rowID: row.id, fields: fields, origin: "shore"))
}
for j in 0..<(totalEvents - inserts) {
    let row = rows.randomElement(using: &rng)!
    let clock = FieldClock(counter: Int64(inserts + j + 1), node: "shore")
    let field = ["name", "amount", "note"].randomElement(using: &rng)!
    let value: JSONValue = field == "amount" ? .number(String(j)) : .string("update \(j)")
    events.append(ChangeEvent(table: row.table, rowID: row.id, fields: [field: .init(value: value, clock: clock)], origin: "shore"))
}
events.shuffle(using: &rng)
let batchBytes = WireCodec.encode(ExchangeRequest(vesselID: "shore", cursor: 0, events: events, upTo: 0))
print("batch: \(totalEvents) events, \(batchBytes.count) bytes encoded")

// The final rows, merged in memory, as COPY text.
var final: [UUID: (Row, RowState)] = [:]
for (i, row) in rows.enumerated() { final[row.id] = (row, RowState()); _ = i }
for event in events { final[event.rowID]!.1.merge(event.fields) }
func copyText(_ table: String, parentColumn: String?, final: [UUID: (Row, RowState)]) -> String {
    var out = ""
    for (row, state) in final.values where row.table == table {
        var clocks: [String: JSONValue] = [:]
        for (k, v) in state.fields { clocks[k] = v.clock.json }
        var columns = [row.id.uuidString.lowercased()]
        if parentColumn != nil { columns.append(row.parent!.uuidString.lowercased()) }
        columns += [state.fields["name"]!.value.stringValue!, { if case .number(let n) = state.fields["amount"]!.value { return n } else { return "" } }(),
                    state.fields["note"]!.value.stringValue!, String(state.version), "f", JSONValue.object(clocks).serialized]
        out += columns.joined(separator: "\t") + "\n"
    }
    return out
}
// The COPY input waits in files, so that the process applying holds only the batch itself.
let copyDirectory = NSTemporaryDirectory() + "fleetsync-apply-bench-\(UUID().uuidString)"
try FileManager.default.createDirectory(atPath: copyDirectory, withIntermediateDirectories: true)
for (table, parent) in [("bench_a", nil as String?), ("bench_b", "a_id"), ("bench_c", "b_id")] {
    try copyText(table, parentColumn: parent, final: final).write(toFile: "\(copyDirectory)/\(table)", atomically: false, encoding: .utf8)
}
final = [:]
rows = []
events = []
let batchFile = "\(copyDirectory)/batch"
guard FileManager.default.createFile(atPath: batchFile, contents: Data(batchBytes)) else {
    fatalError("cannot write the encoded batch to \(batchFile)")
}
let copies: [(String, String?)] = [("bench_a", nil), ("bench_b", "a_id"), ("bench_c", "b_id")]

let cluster = try TestCluster.start()
defer { cluster.stop() }
let url = try await cluster.createDatabase(prefix: "bench")
try Fixtures.runScript(schemaSQL, url: url)
let tables = ["bench_a", "bench_b", "bench_c"].map { TableConfiguration(name: $0, route: .broadcast, defaultOwner: .shared) }
let configuration = Fixtures.configuration(role: .vessel, nodeID: "bench", url: url, tables: tables)
let db = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
_ = try await Installer(configuration: configuration).install(on: db)
try Fixtures.runScript("""
    CREATE TABLE copy_a (LIKE bench_a INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
    CREATE TABLE copy_b (LIKE bench_b INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES, FOREIGN KEY (a_id) REFERENCES copy_a (id));
    CREATE TABLE copy_c (LIKE bench_c INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES, FOREIGN KEY (b_id) REFERENCES copy_b (id));
    """, url: url)
let configurationFile = "\(copyDirectory)/vessel.toml"
try """
    [node]
    role = "vessel"
    id = "bench"
    [database]
    url = "\(url)"
    [vessel]
    shore_url = "http://127.0.0.1:9"
    [[table]]
    name = "bench_a"
    route = "broadcast"
    default_owner = "shared"
    [[table]]
    name = "bench_b"
    route = "broadcast"
    default_owner = "shared"
    [[table]]
    name = "bench_c"
    route = "broadcast"
    default_owner = "shared"
    """.write(toFile: configurationFile, atomically: true, encoding: .utf8)

var applyTimes: [Double] = []
var copyTimes: [Double] = []
var peaks: [Int] = []
let clock = ContinuousClock()
for round in 1...rounds {
    try await db.execute("BEGIN")
    try await db.execute("SET LOCAL fleetsync.applying = 'on'")
    try await db.execute("TRUNCATE bench_c, bench_b, bench_a, copy_c, copy_b, copy_a")
    try await db.execute("COMMIT")
    try await db.execute("VACUUM ANALYZE")
    let child = try Shell.runCapturing([CommandLine.arguments[0], "--apply-child", url, batchFile, configurationFile])
    if environment["SHOW_CHILD"] != nil { print(child.error) }
    guard child.status == 0, let line = child.output.split(separator: "\n").first(where: { $0.hasPrefix("APPLIED") }) else {
        fatalError("apply child failed: \(child.output) \(child.error)")
    }
    let parts = line.split(separator: " ")
    precondition(Int(parts[1]) == totalRows && Int(parts[2]) == 0, "apply failed: \(line)")
    let a = Double(parts[3])!
    peaks.append(Int(parts[4])!)
    print(String(format: "  applying process: %.3f s CPU in all (connect and catalog included); its database backend: %.2f s CPU while applying", Double(parts[5])!, Double(parts[6])!))

    let copyStart = clock.now
    try await db.execute("BEGIN")
    for (table, parent) in copies {
        let text = try String(contentsOfFile: "\(copyDirectory)/\(table)", encoding: .utf8)
        let target = table.replacingOccurrences(of: "bench_", with: "copy_")
        let columns = ["id"] + (parent.map { [$0] } ?? []) + ["name", "amount", "note", "sync_version", "is_deleted", "sync_clock"]
        try await db.connection.copyFrom(table: target, columns: columns, logger: Fixtures.logger) { writer in
            try await writer.write(ByteBuffer(string: text))
        }
    }
    try await db.execute("COMMIT")
    let copied = clock.now - copyStart
    let c = Double(copied.components.seconds) + Double(copied.components.attoseconds) / 1e18
    applyTimes.append(a)
    copyTimes.append(c)
    print(String(format: "round %d: apply %.3f s (%.0f events/s, peak RSS %d MB), COPY of %d final rows %.3f s, ratio %.2f",
                 round, a, Double(totalEvents) / a, peaks.last! / 1024, totalRows, c, c / a))
}
// The applied tables and the copies hold the same rows.
let same: Bool = try await db.scalar("""
    SELECT (SELECT count(*) FROM (SELECT id, name, amount, note, sync_version, sync_clock FROM bench_c EXCEPT SELECT id, name, amount, note, sync_version, sync_clock FROM copy_c) d) = 0
    """)
precondition(same, "applied rows differ from the copied final rows")
let medianApply = applyTimes.sorted()[applyTimes.count / 2]
let medianCopy = copyTimes.sorted()[copyTimes.count / 2]
print(String(format: "apply throughput: apply/COPY = %.2f (median apply %.3f s, median COPY %.3f s, %d events, %d final rows)", medianCopy / medianApply, medianApply, medianCopy, totalEvents, totalRows))
print("peak resident memory of the process applying the batch: \(peaks.max()! / 1024) MB (its own process: reads the \(batchBytes.count / 1024) KB wire batch, decodes it event by event)")
await db.close()
try? FileManager.default.removeItem(atPath: copyDirectory)
