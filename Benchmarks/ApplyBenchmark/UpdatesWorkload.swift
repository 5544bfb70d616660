// WORKLOAD=updates: what the receiving side pays per event for batches of single-column UPDATEs of
// a 12-column table (the end-to-end stream of issue 19): the update through typed arrays against
// the former one through JSON records (WAYS=3: also typed arrays with the rows locked; WAYS=4: the
// former read of every column), alternately in one run on one cluster. EXPLAIN=<file>: every statement's plan (auto_explain) into <file>;
// KEEP=<file>: the cluster stays up for experiments until <file> is removed.
import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation

@discardableResult
func updatesWorkload(rows: Int, batches: Int, rounds: Int, print: Bool = true) async throws -> Double {
    if print { Swift.print("command: WORKLOAD=updates ROWS=\(rows) BATCHES=\(batches) ROUNDS=\(rounds) swift run -c release fleetsync-apply-benchmark") }
    let cluster = try TestCluster.start()
    defer { cluster.stop() }
    let url = try await cluster.createDatabase(prefix: "updates")
    try Fixtures.runScript("""
        CREATE TABLE bench_item (
          id uuid PRIMARY KEY DEFAULT gen_random_uuid(), k integer NOT NULL UNIQUE, code text NOT NULL, title text,
          quantity integer NOT NULL, hits bigint NOT NULL DEFAULT 0, unit_price numeric(12,2), weight_kg double precision,
          active boolean NOT NULL, due_on date, created_at timestamptz NOT NULL, updated_at timestamptz);
        INSERT INTO bench_item (k, code, title, quantity, hits, unit_price, weight_kg, active, due_on, created_at, updated_at)
        SELECT i, 'ITEM-' || lpad(i::text, 6, '0'), 'Spare part number ' || i || ' for the main engine',
               i % 500, 0, (i % 10000) / 100.0, (i % 977) * 0.25, i % 3 <> 0,
               date '2025-01-01' + (i % 365), timestamptz '2024-01-01 00:00+00' + i * interval '1 minute', NULL
        FROM generate_series(1, \(rows)) AS i;
        """, url: url)
    let environment = ProcessInfo.processInfo.environment
    let configuration = Fixtures.configuration(role: .vessel, nodeID: "bench", url: url,
                                               tables: [TableConfiguration(name: "bench_item", route: .broadcast, defaultOwner: .shared)])
    let db = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
    defer { Task { await db.close() } }
    _ = try await Installer(configuration: configuration).install(on: db)
    // Rows that came through FleetSync (or were written here with capture on) carry a clock for
    // every column, as in the end-to-end benchmark; CLOCKS=none keeps the rows as they were
    // before init (no clocks stored).
    let fullClocks = ProcessInfo.processInfo.environment["CLOCKS"] != "none"
    if fullClocks {
        try await db.transaction { tx in
            try await tx.execute("SET LOCAL fleetsync.applying = 'on'")
            try await tx.execute("""
                UPDATE bench_item SET sync_version = 500 + k % 500, sync_clock = (SELECT jsonb_object_agg(c, jsonb_build_array(500 + k % 500, 'shore'))
                  FROM unnest(ARRAY['k', 'code', 'title', 'quantity', 'hits', 'unit_price', 'weight_kg', 'active', 'due_on', 'created_at', 'updated_at']) c)
                """)
        }
        try await db.execute("VACUUM FULL bench_item")
    }
    try await db.execute("VACUUM ANALYZE bench_item")
    let ids: [UUID] = try await db.rows("SELECT id FROM bench_item ORDER BY k", context: "reading ids").map { try $0.decode(UUID.self) }
    let schema = try await LocalSchema.load(configuration: configuration, session: db)
    let telemetry = TelemetryWriter(url: url, logger: Fixtures.logger)
    if environment["EXPLAIN"] != nil {
        // Every statement of the applier's session with its plan, timings, buffers and triggers,
        // into the cluster's server.log (copied to $EXPLAIN at the end).
        for setting in ["LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0", "SET auto_explain.log_analyze = on",
                        "SET auto_explain.log_buffers = on", "SET auto_explain.log_triggers = on", "SET auto_explain.log_wal = on"] {
            try await db.execute(setting)
        }
    }
    defer {
        if let target = environment["EXPLAIN"] {
            try? FileManager.default.removeItem(atPath: target)
            try? FileManager.default.copyItem(atPath: cluster.directory + "/server.log", toPath: target)
        }
    }
    if let keep = environment["KEEP"] {
        // Leaves the cluster up for experiments (psql) until the file `keep` is removed.
        Swift.print("cluster kept: \(url) (remove \(keep) to stop it)")
        FileManager.default.createFile(atPath: keep, contents: nil)
        while FileManager.default.fileExists(atPath: keep) { sleep(1) }
    }
    var counter: Int64 = 1_000
    var rng = SystemRandomNumberGenerator()
    func batch() -> [ChangeEvent] {
        (0..<1_000).map { _ in
            counter += 1
            let clock = FieldClock(counter: counter, node: "shore")
            let field: (String, JSONValue) = Bool.random(using: &rng) ? ("hits", .number(String(counter))) : ("title", .string("title \(counter)"))
            return ChangeEvent(table: "bench_item", rowID: ids.randomElement(using: &rng)!, fields: [field.0: FieldChange(value: field.1, clock: clock)], origin: "shore")
        }
    }
    // Receivers in turn: today's (changed values bound as typed arrays, only the changed clocks
    // sent and merged by the database, only the touched fields' clocks read, rows read without a
    // lock) and the former one (JSON records with every clock of the row, every clock read, rows
    // locked). WAYS=3 adds today's with the rows locked, WAYS=4 the former read of every column.
    let ways: [(name: String, json: Bool, locks: Bool, every: Bool)] = [
        ("typed arrays, rows read unlocked", false, false, false), ("JSON records, rows read locked (before)", true, true, false),
        ("typed arrays, rows read locked", false, true, false), ("every column read", true, true, true),
    ]
    let count = Int(environment["WAYS"] ?? "") ?? 2
    var times = Array(repeating: [Double](), count: count)
    for round in 1...rounds {
        // Each round starts with another way: the table's pages (free space, HOT chains) are left
        // by the way before, which would favour or burden the same way every round.
        for index in (0..<count).map({ ($0 + round - 1) % count }) {
            let way = ways[index]
            var applier = Applier(schema: schema, session: db, telemetry: telemetry)
            applier.readsEveryColumn = way.every
            applier.updatesThroughJSON = way.json
            applier.locksRows = way.locks
            let start = ContinuousClock.now
            for _ in 0..<batches {
                let report = try await applier.apply(batch(), from: "shore")
                precondition(report.deadLettered == 0, "an update failed")
            }
            let elapsed = ContinuousClock.now - start
            let ms = (Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15) / Double(batches)
            times[index].append(ms)
            if print { Swift.print(String(format: "round %d: %@: %.1f ms per 1,000-event batch", round, way.name, ms)) }
        }
    }
    let medians = times.map { $0.sorted()[rounds / 2] }
    if print {
        Swift.print(String(format: "receiver, single-column updates of a 12-column table (%d rows, clocks %@), medians per 1,000 events:", rows, fullClocks ? "on every column" : "none stored"))
        for (index, median) in medians.enumerated() {
            Swift.print(String(format: "  %@: %.1f ms%@", ways[index].name, median, index == 0 ? "" : String(format: " (the first %.2fx faster)", median / medians[0])))
        }
    }
    let narrow = medians[0]
    await telemetry.close()
    return narrow
}

/// The receiver's median time for a batch of 1,000 single-column updates, as applied today.
func updatesApplyMilliseconds(rows: Int, batches: Int, rounds: Int) async throws -> Double {
    try await updatesWorkload(rows: rows, batches: batches, rounds: rounds, print: false)
}
