public enum FleetSyncCoreVersion { public static let version = "0.1.0" }
