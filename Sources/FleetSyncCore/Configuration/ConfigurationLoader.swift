import TOMLKit

/// Reads a TOML configuration into a validated ``FleetSyncConfiguration``.
///
/// Every problem is collected with its key and a fix; unknown keys are errors, so a typo never
/// silently falls back to a default.
public enum ConfigurationLoader {
    /// Largest configuration file accepted.
    public static let maximumBytes = 1_048_576

    /// Parses and validates `text`; `source` names the file in messages.
    public static func load(text: String, source: String = "configuration") throws(ConfigurationErrors) -> FleetSyncConfiguration {
        guard text.utf8.count <= maximumBytes else {
            throw ConfigurationErrors([.init(key: source, problem: "file is \(text.utf8.count) bytes, larger than \(maximumBytes)", fix: "use a configuration file under 1 MiB")])
        }
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationErrors([.init(key: "\(source) line \(error.source.begin.line)", problem: "not valid TOML: \(error.description)", fix: "correct the TOML syntax at that line")])
        } catch {
            throw ConfigurationErrors([.init(key: source, problem: "not valid TOML: \(error)", fix: "correct the TOML syntax")])
        }
        var reader = ConfigurationReader()
        let configuration = reader.read(root)
        if !reader.errors.isEmpty { throw ConfigurationErrors(reader.errors) }
        return configuration!
    }
}

/// Walks the TOML tree once, recording errors instead of stopping at the first.
struct ConfigurationReader {
    var errors: [ConfigurationError] = []

    mutating func fail(_ key: String, _ problem: String, _ fix: String) {
        errors.append(.init(key: key, problem: problem, fix: fix))
    }

    /// Reports keys of `table` not in `known`.
    mutating func checkKeys(_ table: TOMLTable, path: String, known: [String]) {
        for key in table.keys where !known.contains(key) {
            let at = path.isEmpty ? key : "\(path).\(key)"
            fail(at, "unknown key", "remove it or use one of: \(known.joined(separator: ", "))")
        }
    }

    mutating func section(_ root: TOMLTable, _ name: String, required: Bool) -> TOMLTable? {
        guard let value = root[name] else {
            if required { fail(name, "section is missing", "add a [\(name)] section") }
            return nil
        }
        guard let table = value.table else {
            fail(name, "must be a table", "write it as [\(name)]")
            return nil
        }
        return table
    }

    mutating func string(_ table: TOMLTable, _ key: String, path: String, required: Bool) -> String? {
        guard let value = table[key] else {
            if required { fail("\(path).\(key)", "is missing", "add \(key) = \"...\" under [\(path)]") }
            return nil
        }
        guard let s = value.string else {
            fail("\(path).\(key)", "must be a string", "quote the value")
            return nil
        }
        return s
    }

    mutating func integer(_ table: TOMLTable, _ key: String, path: String, range: ClosedRange<Int>) -> Int? {
        guard let value = table[key] else { return nil }
        guard let i = value.int else {
            fail("\(path).\(key)", "must be an integer", "write a whole number between \(range.lowerBound) and \(range.upperBound)")
            return nil
        }
        guard range.contains(i) else {
            fail("\(path).\(key)", "is \(i), outside \(range.lowerBound)...\(range.upperBound)", "choose a value in that range")
            return nil
        }
        return i
    }

    mutating func enumeration<E: RawRepresentable & CaseIterable>(_ table: TOMLTable, _ key: String, path: String, as: E.Type) -> E? where E.RawValue == String {
        guard let raw = string(table, key, path: path, required: false) else { return nil }
        guard let value = E(rawValue: raw) else {
            let allowed = E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            fail("\(path).\(key)", "\"\(raw.prefix(64))\" is not a known value", "use one of \(allowed)")
            return nil
        }
        return value
    }

    mutating func read(_ root: TOMLTable) -> FleetSyncConfiguration? {
        checkKeys(root, path: "", known: ["node", "database", "shore", "vessel", "keys", "limits", "table"])
        let node = section(root, "node", required: true)
        var role: NodeRole?
        var nodeID: String?
        if let node {
            checkKeys(node, path: "node", known: ["role", "id"])
            if node["role"] == nil { fail("node.role", "is missing", "add role = \"shore\" or role = \"vessel\" under [node]") }
            role = enumeration(node, "role", path: "node", as: NodeRole.self)
            nodeID = string(node, "id", path: "node", required: true)
            if let id = nodeID, !Identifiers.isValidNodeID(id) {
                fail("node.id", "\"\(id.prefix(80))\" is not a valid node id", "use \(Identifiers.nodeIDRule), e.g. the vessel's code or IMO number")
            }
        }
        var databaseURL: String?
        if let database = section(root, "database", required: true) {
            checkKeys(database, path: "database", known: ["url"])
            databaseURL = string(database, "url", path: "database", required: true)
            if let url = databaseURL, !(url.hasPrefix("postgres://") || url.hasPrefix("postgresql://")) {
                fail("database.url", "must start with postgres:// or postgresql://", "write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE")
            }
        }
        var shore: ShoreConfiguration?
        if let table = section(root, "shore", required: role == .shore) {
            checkKeys(table, path: "shore", known: ["listen", "retention_days", "retention_max_events", "tls_certificate", "tls_key",
                                                    "database_connections", "concurrent_exchanges", "exchange_queue_seconds", "exchange_queue_length", "request_timeout_seconds", "idle_timeout_seconds", "shutdown_timeout_seconds",
                                                    "long_poll_max_seconds", "long_poll_max_waiters"])
            if role == .vessel { fail("shore", "is a shore setting in a vessel configuration", "remove the [shore] section") }
            if let listen = string(table, "listen", path: "shore", required: true) {
                if !Identifiers.isValidListenAddress(listen) {
                    fail("shore.listen", "\"\(listen.prefix(80))\" is not HOST:PORT", "write it as 0.0.0.0:8080")
                }
                shore = ShoreConfiguration(listen: listen)
                if let days = integer(table, "retention_days", path: "shore", range: 1...3650) { shore?.retentionDays = days }
                if let events = integer(table, "retention_max_events", path: "shore", range: 0...1_000_000_000_000) { shore?.retentionMaxEvents = events }
                if let n = integer(table, "database_connections", path: "shore", range: 1...1_000) { shore?.databaseConnections = n }
                if let n = integer(table, "concurrent_exchanges", path: "shore", range: 1...100_000) { shore?.concurrentExchanges = n }
                if let value = table["exchange_queue_seconds"] {
                    if let s = value.double ?? value.int.map(Double.init), (0...60).contains(s) { shore?.exchangeQueueSeconds = s } else {
                        fail("shore.exchange_queue_seconds", "must be a number of seconds from 0 to 60", "write exchange_queue_seconds = 2 (0: answer busy at once when concurrent_exchanges are in progress)")
                    }
                }
                if let n = integer(table, "exchange_queue_length", path: "shore", range: 0...1_000_000) { shore?.exchangeQueueLength = n }
                if let n = integer(table, "request_timeout_seconds", path: "shore", range: 1...3_600) { shore?.requestTimeoutSeconds = n }
                if let n = integer(table, "idle_timeout_seconds", path: "shore", range: 1...3_600) { shore?.idleTimeoutSeconds = n }
                if let n = integer(table, "shutdown_timeout_seconds", path: "shore", range: 1...600) { shore?.shutdownTimeoutSeconds = n }
                if let n = integer(table, "long_poll_max_seconds", path: "shore", range: 0...3_600) { shore?.longPollMaxSeconds = n }
                if let n = integer(table, "long_poll_max_waiters", path: "shore", range: 0...1_000_000) { shore?.longPollMaxWaiters = n }
                shore?.tlsCertificate = string(table, "tls_certificate", path: "shore", required: false)
                shore?.tlsKey = string(table, "tls_key", path: "shore", required: false)
                if (shore?.tlsCertificate == nil) != (shore?.tlsKey == nil) {
                    fail("shore.tls_certificate", "TLS needs both tls_certificate and tls_key", "set both (PEM files) or neither for cleartext HTTP/1.1")
                }
            }
        }
        var vessel: VesselConfiguration?
        if let table = section(root, "vessel", required: role == .vessel) {
            checkKeys(table, path: "vessel", known: ["shore_url", "interval_seconds", "request_timeout_seconds", "tls_ca", "shore_identity", "wake_on_change", "long_poll",
                                                       "verify_interval_seconds", "verify_repair", "read_ahead", "send_ahead", "adaptive_batch"])
            if role == .shore { fail("vessel", "is a vessel setting in a shore configuration", "remove the [vessel] section") }
            if let url = string(table, "shore_url", path: "vessel", required: true) {
                if !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                    fail("vessel.shore_url", "must start with http:// or https://", "write the shore's base URL, e.g. https://shore.example.com:8443")
                }
                vessel = VesselConfiguration(shoreURL: url)
                if let s = integer(table, "interval_seconds", path: "vessel", range: 1...86_400) { vessel?.intervalSeconds = s }
                if let s = integer(table, "request_timeout_seconds", path: "vessel", range: 1...3_600) { vessel?.requestTimeoutSeconds = s }
                vessel?.tlsCA = string(table, "tls_ca", path: "vessel", required: false)
                vessel?.shoreIdentity = string(table, "shore_identity", path: "vessel", required: false)
                if let value = table["wake_on_change"] {
                    if let wake = value.bool { vessel?.wakeOnChange = wake } else { fail("vessel.wake_on_change", "must be true or false", "write wake_on_change = true or false") }
                }
                if let value = table["long_poll"] {
                    if let poll = value.bool { vessel?.longPoll = poll } else { fail("vessel.long_poll", "must be true or false", "write long_poll = true or false") }
                }
                if let s = integer(table, "verify_interval_seconds", path: "vessel", range: 0...31_536_000) { vessel?.verifyIntervalSeconds = s }
                if let value = table["verify_repair"] {
                    if let repair = value.bool { vessel?.verifyRepair = repair } else { fail("vessel.verify_repair", "must be true or false", "write verify_repair = true or false") }
                }
                if let value = table["read_ahead"] {
                    if let on = value.bool { vessel?.readAhead = on } else { fail("vessel.read_ahead", "must be true or false", "write read_ahead = true or false") }
                }
                if let value = table["send_ahead"] {
                    if let on = value.bool { vessel?.sendAhead = on } else { fail("vessel.send_ahead", "must be true or false", "write send_ahead = true or false") }
                }
                if let value = table["adaptive_batch"] {
                    if let on = value.bool { vessel?.adaptiveBatch = on } else { fail("vessel.adaptive_batch", "must be true or false", "write adaptive_batch = true or false") }
                }
            }
        }
        var keysDirectory: String?
        if let keys = section(root, "keys", required: false) {
            checkKeys(keys, path: "keys", known: ["directory"])
            keysDirectory = string(keys, "directory", path: "keys", required: true)
        }
        var limits = Limits()
        if let table = section(root, "limits", required: false) {
            checkKeys(table, path: "limits", known: ["batch_events", "batch_bytes", "max_change_bytes", "max_batch_events", "max_batch_bytes"])
            if let n = integer(table, "batch_events", path: "limits", range: 1...100_000) { limits.batchEvents = n }
            if let n = integer(table, "batch_bytes", path: "limits", range: 4096...67_108_864) { limits.batchBytes = n }
            if let n = integer(table, "max_change_bytes", path: "limits", range: 65_536...268_435_456) { limits.maximumChangeBytes = n }
            if let n = integer(table, "max_batch_events", path: "limits", range: 1...100_000) { limits.maximumBatchEvents = n }
            if let n = integer(table, "max_batch_bytes", path: "limits", range: 4096...67_108_864) { limits.maximumBatchBytes = n }
        }
        // The ceilings are at least the starting sizes (a configuration that sets only
        // batch_events above the default ceiling keeps its batches).
        limits.maximumBatchEvents = max(limits.maximumBatchEvents, limits.batchEvents)
        limits.maximumBatchBytes = max(limits.maximumBatchBytes, limits.batchBytes)
        let tables = readTables(root)
        guard let role, let nodeID, let databaseURL, errors.isEmpty else { return nil }
        return FleetSyncConfiguration(
            role: role, nodeID: nodeID, databaseURL: databaseURL, shore: shore, vessel: vessel,
            keysDirectory: keysDirectory, limits: limits, tables: tables)
    }
}
