import Foundation

/// The `fleetsync` executable built next to the test bundle, run as a real process.
public enum FleetSyncBinary {
    public static var path: String {
        let bundle = Bundle.main.bundleURL.deletingLastPathComponent()
        for candidate in [bundle.appendingPathComponent("fleetsync"), bundle.deletingLastPathComponent().appendingPathComponent("fleetsync")] {
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
        }
        return Fixtures.repositoryRoot.appendingPathComponent(".build/debug/fleetsync").path
    }

    /// Runs `fleetsync arguments` to completion.
    public static func run(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        try Shell.runCapturing([path] + arguments)
    }

    /// Writes `text` to a temporary configuration file and returns its path.
    public static func writeConfiguration(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "fleetsync-\(UUID().uuidString).toml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The TOML of the example configuration for `role`, pointed at `url`.
    public static func exampleConfiguration(role: String, url: String, nodeID: String? = nil, extra: String = "") throws -> String {
        var text = try String(contentsOf: Fixtures.repositoryRoot.appendingPathComponent("examples/\(role).toml"), encoding: .utf8)
        text = text.replacingOccurrences(of: #"url = "postgres://[^"]*""#, with: "url = \"\(url)\"", options: .regularExpression)
        if let nodeID { text = text.replacingOccurrences(of: #"(?m)^id = "[^"]*""#, with: "id = \"\(nodeID)\"", options: .regularExpression) }
        return text + extra
    }
}
